"""Dynamic ODE blocks: a feature map evolved by a neural ODE over ``s in [0, 1]``.

The state ``z`` has ``C`` channels. Two dynamics are offered:

* ``second_order`` (default): ``z = (x, v)``, each ``C/2`` channels, and
  ``x' = v``, ``v' = f(x, v, t_emb)``: a true second-order ODE ``x'' = f(x, x', t_emb)``.
* ``augmented_first_order`` (the authors' draft code): ``z' = f(z, t_emb)`` with ``f``
  mapping the whole state; the position/velocity split is nominal.

``f`` is norm -> conv3x3 -> softplus -> norm -> FiLM(t_emb) -> conv3x3 (``func_output:
linear``), its last conv zero-initialised so an untrained block has ``f = 0``: the state keeps
its initial value (``second_order``: ``x(1) = x(0) + v(0)``, ``v`` constant). The draft's
``softplus_residual`` ends instead in ``softplus(conv3x3(.)) + z`` (for ``second_order`` the
residual is ``v``). The diffusion-time embedding enters every evaluation of ``f`` through the
FiLM scale/shift unless ``time_conditioning`` is off (the draft's defect, kept as an ablation).

Solving uses torchdiffeq (``odeint`` or, with ``adjoint``, ``odeint_adjoint``, Chen et al. 2018),
so training memory with the adjoint does not grow with the number of solver steps.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ..config import ConfigError
from ..specs.models import (  # noqa: F401  (re-exported)
    ADAPTIVE_SOLVERS,
    DYNAMICS,
    EVALS_PER_STEP,
    FIXED_STEP_SOLVERS,
    SOLVERS,
    SolverConfig,
)
from .layers import norm_layer, scale_shift


def integrate(
    solver: SolverConfig, func: nn.Module, z0: Tensor, params: tuple[Tensor, ...],
    grid: tuple[tuple[float, float], ...] = (),
) -> Tensor:
    """``z(1)`` for ``z' = func(s, z)``, ``z(0) = z0``; ``params`` are the adjoint's inputs.

    Fixed-step methods without the adjoint run :func:`fixed_step_solve` over ``grid`` (the
    block's precomputed :func:`fixed_grid`; the same arithmetic as torchdiffeq's, with no host
    synchronisation, so CUDA graphs and ``torch.compile`` take the whole forward); the adjoint
    and ``dopri5`` use torchdiffeq."""
    if solver.method in FIXED_STEP_SOLVERS and not solver.adjoint:
        return fixed_step_solve(func, z0, solver.method, grid or fixed_grid(solver.steps))
    # imported here: torchdiffeq imports scipy.integrate (a second of every command's start)
    from torchdiffeq import odeint, odeint_adjoint

    if solver.method in FIXED_STEP_SOLVERS:
        grid = torch.linspace(0.0, 1.0, solver.steps + 1, device=z0.device)
        kwargs: dict = {"method": solver.method}
    else:
        grid = torch.tensor([0.0, 1.0], device=z0.device)
        kwargs = {"method": solver.method, "rtol": solver.rtol, "atol": solver.atol}
    if solver.adjoint:
        return odeint_adjoint(func, z0, grid, adjoint_params=params, **kwargs)[-1]
    return odeint(func, z0, grid, **kwargs)[-1]


def fixed_grid(steps: int) -> tuple[tuple[float, float], ...]:
    """``(s, h)`` of each step of the float32 grid ``linspace(0, 1, steps + 1)``, as Python numbers
    (``h`` the float32 difference of neighbours, as torchdiffeq computes it)."""
    grid = torch.linspace(0.0, 1.0, steps + 1)
    return tuple((float(a), float(b - a)) for a, b in zip(grid[:-1], grid[1:]))


def fixed_step_solve(func: nn.Module, z0: Tensor, method: str, grid: tuple[tuple[float, float], ...]) -> Tensor:
    """``z(1)`` of ``z' = func(s, z)`` by the steps ``(s, h)`` of ``grid`` (:func:`fixed_grid`)
    with ``method``, in torchdiffeq's formulas and order of operations (the same result to the bit):

    * euler: ``z + h f(s, z)``
    * midpoint: ``z + h f(s + h/2, z + f(s, z) h/2)``
    * rk4 (torchdiffeq's ``rk4``, Kutta's 3/8 rule): ``k1 = f(s, z)``, ``k2 = f(s + h/3, z + h k1 / 3)``,
      ``k3 = f(s + 2h/3, z + h (k2 - k1/3))``, ``k4 = f(s + h, z + h (k1 - k2 + k3))``,
      ``z + (k1 + 3 (k2 + k3) + k4) h / 8``.

    Times and step sizes are Python numbers computed when the block is built (the stage times in
    float64, where torchdiffeq rounds them to float32: equal results for fields that, like the
    cU-Net's, do not depend on ``s``), so nothing reads a
    device value back to the host and the loop unrolls under CUDA-graph capture and ``torch.compile``."""
    third, two_thirds = 1 / 3, 2 / 3
    z = z0
    for s, h in grid:
        k1 = func(s, z)
        if method == "euler":
            dz = h * k1
        elif method == "midpoint":
            dz = h * func(s + 0.5 * h, z + k1 * (0.5 * h))
        else:
            k2 = func(s + h * third, z + h * k1 * third)
            k3 = func(s + h * two_thirds, z + h * (k2 - k1 * third))
            k4 = func(s + h, z + h * (k1 - k2 + k3))
            dz = (k1 + 3 * (k2 + k3) + k4) * h * 0.125
        z = z + dz
    return z


FUNC_OUTPUTS = ("linear", "softplus_residual")


class ODEFunc(nn.Module):
    """``f(z, film) = conv2(FiLM(N(softplus(conv1(N(z))))))``, channels ``dim_in -> dim_out``;
    with ``softplus_residual``, ``softplus(conv2(.)) + z[:, -dim_out:]`` (the draft's)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, groups: int, norm: str = "group",
                 output: str = "linear"):
        super().__init__()
        self.norm1 = norm_layer(norm, dim_in, groups)
        self.conv1 = nn.Conv2d(dim_in, hidden, 3, padding=1)
        self.act = nn.Softplus()
        self.norm2 = norm_layer(norm, hidden, groups)
        self.conv2 = nn.Conv2d(hidden, dim_out, 3, padding=1)
        self.residual = output == "softplus_residual"
        if not self.residual:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def forward(self, z: Tensor, film: Tensor | None) -> Tensor:
        h = self.norm2(self.act(self.conv1(self.norm1(z))))
        if film is not None:
            h = scale_shift(h, film)
        out = self.conv2(h)
        if self.residual:
            return self.act(out) + z[:, z.shape[1] - out.shape[1]:]
        return out


class _Vectorfield(nn.Module):
    """The right-hand side handed to torchdiffeq for one solve; counts its evaluations."""

    def __init__(self, block: ODEBlock, film: Tensor | None):
        super().__init__()
        self.block = block
        self.film = film
        self.evals = 0

    def forward(self, s: Tensor, z: Tensor) -> Tensor:
        self.evals += 1
        func = self.block.func
        if self.block.dynamics == "augmented_first_order":
            return func(z, self.film)
        v = z[:, z.shape[1] // 2 :]
        return torch.cat((v, func(z, self.film)), dim=1)


class ODEBlock(nn.Module):
    """Evolve a ``channels``-wide state from ``s=0`` to ``s=1``; ``nfe`` holds the number of
    function evaluations of the last forward solve."""

    def __init__(
        self,
        channels: int,
        *,
        time_dim: int | None,
        dynamics: Literal["second_order", "augmented_first_order"] = "second_order",
        solver: SolverConfig = SolverConfig(),
        groups: int = 8,
        norm: str = "group",
        func_output: str = "linear",
    ):
        super().__init__()
        if dynamics not in DYNAMICS:
            raise ConfigError(f"dynamics: unknown {dynamics!r}; allowed: {', '.join(DYNAMICS)}")
        if dynamics == "second_order" and channels % 2:
            raise ConfigError(f"channels: second_order dynamics split the state in halves; {channels} is odd")
        self.dynamics = dynamics
        self.solver = solver
        dim_out = channels // 2 if dynamics == "second_order" else channels
        self.func = ODEFunc(channels, channels, dim_out, groups, norm=norm, output=func_output)
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * channels)) if time_dim else None
        self.grid = fixed_grid(solver.steps) if solver.method in FIXED_STEP_SOLVERS else ()
        self.nfe = 0

    def forward(self, z: Tensor, t_emb: Tensor | None) -> Tensor:
        film = self.film(t_emb) if self.film is not None and t_emb is not None else None
        field = _Vectorfield(self, film)
        params = tuple(self.func.parameters()) + ((film,) if film is not None else ())
        out = integrate(self.solver, field, z, params, self.grid)
        self.nfe = field.evals
        return out
