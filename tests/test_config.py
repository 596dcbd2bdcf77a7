"""Bad input fails early, naming the key and the allowed values."""

from __future__ import annotations

import pytest

from missingu.config import ConfigError, apply_overrides
from missingu.diffusion import DiffusionConfig
from missingu.experiment import load_experiment, parse_experiment


def test_tiny_config_is_valid(tiny_config):
    cfg = parse_experiment(tiny_config)
    assert cfg.model("cunet").arch == "cunet"
    assert cfg.dataset().size == 8
    assert cfg.sampler("ddim").steps == 5


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("models", 0, "arch"), "transformer", "models[0].arch: unknown architecture 'transformer'; allowed: cunet, ddpm, unet"),
        (("models", 0, "preset"), "huge", "models[0].preset: unknown unet preset 'huge'; allowed: digits, paper, tiny"),
        (("datasets", 0, "name"), "imagenet", "datasets[0].name: unknown dataset 'imagenet'; allowed: celeba, cifar10"),
        (("samplers", 0, "kind"), "euler_a", "samplers[0].kind: 'euler_a' is not allowed; allowed: 'ddpm', 'ddim', 'pf_ode'"),
        (("samplers", 2, "method"), "rk45", "samplers[2].method: unknown ODE solver 'rk45'; allowed: dopri5, euler, midpoint, rk4"),
        (("diffusion", "schedule"), "quadratic", "diffusion.schedule: unknown noise schedule 'quadratic'; allowed: cosine, linear, sigmoid"),
        (("diffusion", "objective"), "x0", "diffusion.objective: 'x0' is not allowed; allowed: 'eps', 'v'"),
        (("train", "steps"), 0, "train.steps: must be positive, got 0"),
        (("train", "steps"), -5, "train.steps: must be positive, got -5"),
        (("samplers", 1, "steps"), 0, "samplers[1].steps: must be positive, got 0"),
        (("diffusion", "timesteps"), 0, "diffusion.timesteps: must be positive, got 0"),
        (("train", "batch_size"), "many", "train.batch_size: expected an integer, got 'many'"),
        (("train", "lr"), True, "train.lr: expected a number, got True"),
        (("train", "lr"), "2e-3", "train.lr: expected a number, got '2e-3' (YAML reads 2e-3 as text; write it with a dot: 0.002)"),
        (("device",), "tpu", "device: unknown 'tpu'; allowed: auto, cpu, cuda, cuda:N, mps"),
    ],
)
def test_bad_values_name_key_and_allowed(tiny_config, path, value, expected):
    node = tiny_config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        parse_experiment(tiny_config)
    assert str(err.value).startswith(expected)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (None, "learning_rate: unknown key; allowed keys of the config: bench, datasets, denoise, device, diffusion"),
        ("train", "train.learning_rate: unknown key; allowed keys of train: amp, batch_size, betas"),
        ("diffusion", "diffusion.learning_rate: unknown key; allowed keys of diffusion: beta_end"),
    ],
)
def test_unknown_keys_are_errors(tiny_config, section, expected):
    (tiny_config if section is None else tiny_config[section])["learning_rate"] = 1e-3
    with pytest.raises(ConfigError, match="^" + expected.replace("(", r"\(")):
        parse_experiment(tiny_config)


def test_unknown_model_option_names_allowed_keys(tiny_config):
    tiny_config["models"][1]["options"] = {"solver_stepz": 2}
    with pytest.raises(ConfigError, match=r"^models\[1\]\.options\.solver_stepz: unknown key; allowed keys of options: "
                       r"adjoint, atol, attention, attention_residual, attn_dim_head, attn_heads, channels, dynamics"):
        parse_experiment(tiny_config)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"solver": "rk45"}, "solver: unknown ODE solver 'rk45'; allowed: dopri5, euler, midpoint, rk4"),
        ({"solver_steps": 0}, "solver_steps: must be positive, got 0"),
        ({"dynamics": "third_order"}, "dynamics: 'third_order' is not allowed; allowed: 'second_order', 'augmented_first_order'"),
        ({"attention": ["none", "flash"]}, "attention[1]: unknown attention 'flash'; allowed: full, linear, none"),
        ({"attention": ["none"]}, "attention: needs one entry per level (2), got 1"),
    ],
)
def test_bad_cunet_options(tiny_config, options, expected):
    tiny_config["models"][1]["options"] = options
    with pytest.raises(ConfigError) as err:
        parse_experiment(tiny_config)
    assert str(err.value) == f"models[1].options.{expected}"


def test_image_size_the_unet_cannot_halve(tiny_config):
    tiny_config["models"] = [{"name": "big", "arch": "unet", "preset": "paper"}]
    tiny_config["datasets"][0]["image_size"] = 28
    with pytest.raises(ConfigError, match=r"^datasets\.digits\.image_size: 28 cannot be halved 3 times .* "
                       r"use a multiple of 8, e\.g\. 32 \(model 'big'\)"):
        parse_experiment(tiny_config)


def test_duplicate_names_rejected(tiny_config):
    tiny_config["models"][1]["name"] = "unet"
    with pytest.raises(ConfigError, match="models: names must be unique; 'unet' appears twice"):
        parse_experiment(tiny_config)


def test_linear_schedule_with_too_few_steps():
    with pytest.raises(ConfigError, match="beta >= 1"):
        DiffusionConfig(timesteps=20)


def test_overrides_address_list_entries_by_name(tiny_config):
    data = apply_overrides(tiny_config, ["models.cunet.options.solver_steps=3", "train.steps=9"])
    cfg = parse_experiment(data)
    assert cfg.model("cunet").resolve().solver_steps == 3
    assert cfg.train.steps == 9
    with pytest.raises(ConfigError, match="no entry named 'vit'"):
        apply_overrides(tiny_config, ["models.vit.preset=tiny"])
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        apply_overrides(tiny_config, ["train.steps"])


def test_pick_entry_by_name(tiny_config):
    cfg = parse_experiment(tiny_config)
    with pytest.raises(ConfigError, match="models: the config has several entries"):
        cfg.model()
    with pytest.raises(ConfigError, match="samplers: no entry named 'heun'; allowed: ddpm, ddim, pf_ode"):
        cfg.sampler("heun")


@pytest.mark.parametrize("name", ["..", "a/b", "-x", ".hidden", "two words", "ü", ""])
def test_entry_names_must_be_safe_in_paths_and_wildcards(tiny_config, name):
    tiny_config["samplers"][0]["name"] = name
    with pytest.raises(ConfigError, match=r"^samplers\[0\]\.name: .* cannot name files; use letters, digits"):
        parse_experiment(tiny_config)


@pytest.mark.parametrize("section", ["samplers", "profile"])
def test_ddim_steps_beyond_the_diffusion_steps(tiny_config, section):
    bad = {"name": "ddim99", "kind": "ddim", "steps": 99}  # tiny config: 50 diffusion steps
    if section == "samplers":
        tiny_config["samplers"].append(bad)
        key = r"samplers\[3\]"
    else:
        tiny_config["profile"] = {"samplers": [bad]}
        key = r"profile\.samplers\[0\]"
    with pytest.raises(ConfigError, match=rf"^{key}\.steps: DDIM sampler 'ddim99' asks for 99 steps; at most "
                       r"diffusion\.timesteps \(50\)"):
        parse_experiment(tiny_config)


def test_profile_sampler_names_are_unique(tiny_config):
    tiny_config["profile"] = {"samplers": [{"name": "s", "kind": "ddpm"}, {"name": "s", "kind": "ddim"}]}
    with pytest.raises(ConfigError, match="profile.samplers: names must be unique; 's' appears twice"):
        parse_experiment(tiny_config)


def test_config_file_that_is_not_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("datasets: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML"):
        load_experiment(path)
