"""Symbolic (sympy) proofs of the linear beta-VAE identities that the MR-VAE gates rely on.

Scope (paper section 2.2, App. A; paper-notes section 2).  In the eigenbasis of the data
covariance S the linear beta-VAE loss separates into one term per latent dimension i.  With
``lam`` = lambda_i > 0 (data variance along eigenvector u_i), ``d`` the decoder scale (column of D
along u_i), ``e`` the encoder scale (row of E along u_i), ``c`` > 0 the shared posterior variance,
sigma^2 = 1 and the constant (n/2) log(2 pi) dropped, the per-dimension loss (nats per example) is

    L(d, e, c; beta) = 1/2 [lam - 2 d e lam + d^2 e^2 lam + d^2 c]      (distortion)
                       + beta * 1/2 [-log c + e^2 lam + c - 1]         (beta * rate)

which is paper-notes 2.2, D = 1/2[tr S - 2 tr(DES) + tr(E^T D^T D E S) + tr(D C D^T)],
R = 1/2[-sum log C_ii + tr(E^T E S) + tr C - k], restricted to one eigen-direction.

Every identity is proved with sympy: ``simplify(lhs - rhs) == 0`` on positive symbols, or sympy's
own sign deduction (``is_positive``) on a factored expression, or ``solve()`` results compared.
Piecewise statements are proved branch by branch with branch substitutions such as
``lam = beta + s`` (beta < lam) or ``beta = lam + s`` (beta >= lam) with ``s > 0`` or ``s >= 0``.
Nothing is checked numerically here; ``tests/test_symbolic.py`` adds numeric cross-checks.

Public API
----------
``Identity``                    one proved (or not) statement with a one-line summary and detail.
``verify_all()``                runs every proof (a few seconds); a failure gives ``proved=False``.
``format_report(identities)``   plain-text table for ``mrvae-cli linear verify``.
``per_dimension_objective()``   the sympy loss, distortion, rate and their symbols.
``prove_equal``, ``prove_positive``, ``prove_negative``, ``prove_nonnegative``
                                the small provers the proofs use (exposed for negative controls).
``sym_sigmoid``, ``sym_sqrt_gate``  the two MR-VAE gates as sympy expressions.

Importing this module does no symbolic work; sympy itself is imported lazily.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = [
    "Identity",
    "PerDimensionObjective",
    "per_dimension_objective",
    "prove_equal",
    "prove_positive",
    "prove_negative",
    "prove_nonnegative",
    "sym_sigmoid",
    "sym_sqrt_gate",
    "verify_all",
    "format_report",
    "PROOF_NAMES",
]


# ---------------------------------------------------------------------------------------------
# Public containers
# ---------------------------------------------------------------------------------------------
@dataclass
class Identity:
    """One identity: its ``name``, a one-line ``statement``, whether sympy ``proved`` it, and a
    ``detail`` string saying what was reduced to zero / which branch / which sign was deduced."""

    name: str
    statement: str
    proved: bool
    detail: str


@dataclass(frozen=True)
class PerDimensionObjective:
    """The per-dimension linear beta-VAE objective as sympy expressions (nats per example).

    ``loss = distortion + beta * rate``; ``distortion`` drops the (n/2) log(2 pi) constant.
    Symbols: ``d`` decoder scale, ``e`` encoder scale, ``c`` posterior variance, ``lam`` data
    eigenvalue, ``beta`` rate weight.
    """

    loss: Any
    distortion: Any
    rate: Any
    d: Any
    e: Any
    c: Any
    lam: Any
    beta: Any


def per_dimension_objective(d: Any = None, e: Any = None, c: Any = None, lam: Any = None,
                            beta: Any = None) -> PerDimensionObjective:
    """Build ``L(d, e, c; beta) = distortion + beta * rate`` for one latent dimension.

    Any argument left as ``None`` becomes a fresh sympy symbol: ``d``, ``e`` real, ``c``, ``lam``,
    ``beta`` positive.  Pass your own symbols or expressions (e.g. ``d=sqrt(lam - beta)``) to
    substitute.  Returns a :class:`PerDimensionObjective`.
    """
    import sympy as sp

    d = sp.Symbol("d", real=True) if d is None else d
    e = sp.Symbol("e", real=True) if e is None else e
    c = sp.Symbol("c", positive=True) if c is None else c
    lam = sp.Symbol("lam", positive=True) if lam is None else lam
    beta = sp.Symbol("beta", positive=True) if beta is None else beta
    half = sp.Rational(1, 2)
    distortion = half * (lam - 2 * d * e * lam + d**2 * e**2 * lam + d**2 * c)
    rate = half * (-sp.log(c) + e**2 * lam + c - 1)
    return PerDimensionObjective(distortion + beta * rate, distortion, rate, d, e, c, lam, beta)


def sym_sigmoid(x: Any) -> Any:
    """The encoder gate, sigmoid(x) = 1 / (1 + exp(-x)), as a sympy expression."""
    import sympy as sp

    return 1 / (1 + sp.exp(-x))


def sym_sqrt_gate(x: Any) -> Any:
    """The decoder gate, sqrt(max(0, 1 - exp(x))), as a sympy expression (paper Eq. 7)."""
    import sympy as sp

    return sp.sqrt(sp.Max(0, 1 - sp.exp(x)))


def sym_exp_min_gate(x: Any) -> Any:
    """The exp-min covariance gate of our linear MR-VAE, exp(min(x, 0)), as a sympy expression."""
    import sympy as sp

    return sp.exp(sp.Min(x, 0))


# ---------------------------------------------------------------------------------------------
# Small provers
# ---------------------------------------------------------------------------------------------
def _substitute(expr: Any, assumptions: Mapping[Any, Any] | None) -> Any:
    import sympy as sp

    expr = sp.sympify(expr)
    if assumptions:
        expr = expr.subs(dict(assumptions))
    return expr


def _sign(expr: Any) -> int | None:
    """+1 when sympy deduces ``expr >= 0``, -1 when it deduces ``expr <= 0`` (0 when both), from
    the symbols' assumptions; None when undecided.  ``log(X)`` (X > 0) has the sign of ``X - 1``."""
    import sympy as sp

    simplified = sp.simplify(expr)
    candidates: list[tuple[int, Any]] = [(1, expr), (1, simplified),
                                         (1, sp.factor(sp.together(simplified)))]
    for negate, core in ((1, sp.logcombine(simplified)), (-1, sp.logcombine(-simplified))):
        if isinstance(core, sp.log):  # log X vs 0  <=>  X vs 1
            inner = sp.factor(sp.together(sp.simplify(core.args[0] - 1)))
            candidates.append((negate, inner))
    for negate, cand in candidates:
        if cand.is_zero is True:
            return 0
        if cand.is_nonnegative is True:
            return negate
        if cand.is_nonpositive is True:
            return -negate
    return None


def _decide_minmax(node: Any) -> Any:
    """Replace Max(a, b) / Min(a, b) by the argument the sign of ``a - b`` selects, when sympy
    can decide that sign (ties are harmless: both arguments are then equal); otherwise rebuild
    the node from simplified arguments."""
    import sympy as sp

    args = [sp.simplify(a) for a in node.args]
    if len(args) == 2:
        sign = _sign(args[0] - args[1])
        if sign is not None:
            first_not_smaller = sign >= 0
            take_first = first_not_smaller if isinstance(node, sp.Max) else sign <= 0
            return args[0] if take_first else args[1]
    return node.func(*args)


def _reduce(expr: Any) -> Any:
    """Simplify ``expr``; Max/Min nodes are decided first from the symbols' sign assumptions
    (e.g. Max(0, 1 - b/(b+s)) -> s/(b+s) for b, s > 0)."""
    import sympy as sp

    for _ in range(3):  # nested Max/Min: a few bottom-up passes
        new = expr.replace(lambda n: isinstance(n, (sp.Max, sp.Min)), _decide_minmax)
        if new == expr:
            break
        expr = new
    return sp.simplify(expr)


def _is_zero(expr: Any) -> bool:
    import sympy as sp

    if expr == 0:
        return True
    reduced = _reduce(expr)
    if reduced == 0:
        return True
    # log-heavy expressions: expand logs (valid, sympy only expands when the symbols'
    # positivity allows it; no ``force``) and try again.
    expanded = sp.simplify(sp.expand_log(reduced))
    if expanded == 0:
        return True
    return sp.simplify(sp.factor(sp.together(expanded))) == 0


def prove_equal(lhs: Any, rhs: Any, assumptions: Mapping[Any, Any] | None = None) -> bool:
    """True when sympy reduces ``lhs - rhs`` to exactly 0.

    ``assumptions`` is an optional mapping of branch substitutions applied to both sides first,
    e.g. ``{lam: beta + s}`` with ``s`` a positive symbol encodes ``beta < lam``; the symbols'
    own assumptions (positive, real, ...) carry the rest.  Never raises; a failure to reduce to
    zero (or any sympy error) returns False.  No numeric evaluation is involved.
    """
    try:
        return bool(_is_zero(_substitute(lhs, assumptions) - _substitute(rhs, assumptions)))
    except Exception:  # noqa: BLE001 - a prover that errors has not proved anything
        return False


def _sign_is(expr: Any, assumptions: Mapping[Any, Any] | None, attr: str) -> bool:
    import sympy as sp

    try:
        expr = _substitute(expr, assumptions)
        candidates = [expr]
        reduced = _reduce(expr)
        candidates += [reduced, sp.factor(sp.together(reduced))]
        return any(getattr(cand, attr) is True for cand in candidates)
    except Exception:  # noqa: BLE001
        return False


def prove_positive(expr: Any, assumptions: Mapping[Any, Any] | None = None) -> bool:
    """True when sympy deduces ``expr > 0`` from the symbols' assumptions (after substitution,
    simplification and factoring).  Never raises; an undecided sign returns False."""
    return _sign_is(expr, assumptions, "is_positive")


def prove_negative(expr: Any, assumptions: Mapping[Any, Any] | None = None) -> bool:
    """True when sympy deduces ``expr < 0``; see :func:`prove_positive`."""
    return _sign_is(expr, assumptions, "is_negative")


def prove_nonnegative(expr: Any, assumptions: Mapping[Any, Any] | None = None) -> bool:
    """True when sympy deduces ``expr >= 0``; see :func:`prove_positive`."""
    return _sign_is(expr, assumptions, "is_nonnegative")


@dataclass
class _Proof:
    """Collects the steps of one proof; the identity is proved iff every step holds."""

    steps: list[tuple[str, bool]] = field(default_factory=list)

    def equal(self, label: str, lhs: Any, rhs: Any, assumptions: Mapping[Any, Any] | None = None
              ) -> bool:
        ok = prove_equal(lhs, rhs, assumptions)
        self.steps.append((label, ok))
        return ok

    def positive(self, label: str, expr: Any, assumptions: Mapping[Any, Any] | None = None) -> bool:
        ok = prove_positive(expr, assumptions)
        self.steps.append((label, ok))
        return ok

    def negative(self, label: str, expr: Any, assumptions: Mapping[Any, Any] | None = None) -> bool:
        ok = prove_negative(expr, assumptions)
        self.steps.append((label, ok))
        return ok

    def nonnegative(self, label: str, expr: Any, assumptions: Mapping[Any, Any] | None = None
                    ) -> bool:
        ok = prove_nonnegative(expr, assumptions)
        self.steps.append((label, ok))
        return ok

    def fact(self, label: str, ok: bool) -> bool:
        self.steps.append((label, bool(ok)))
        return bool(ok)

    def detail(self) -> str:
        return "; ".join(f"{label} [{'ok' if ok else 'FAILED'}]" for label, ok in self.steps)


def _symbols() -> dict[str, Any]:
    """Shared symbols: lam, beta, s (branch gap) positive; s0 nonnegative; d, e real."""
    import sympy as sp

    return {
        "lam": sp.Symbol("lam", positive=True),
        "beta": sp.Symbol("beta", positive=True),
        "s": sp.Symbol("s", positive=True),
        "s0": sp.Symbol("s0", nonnegative=True),
        "w": sp.Symbol("w", positive=True),
    }


def _joint_point(lam: Any, beta: Any, active: bool) -> tuple[Any, Any, Any]:
    """(d, e, c) of the joint optimum on one branch: active (beta < lam) or collapsed."""
    import sympy as sp

    if active:
        d = sp.sqrt(lam - beta)
        return d, d / lam, beta / lam
    return sp.Integer(0), sp.Integer(0), sp.Integer(1)


# ---------------------------------------------------------------------------------------------
# The proofs: each a small function returning its _Proof, registered with name and statement
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Registered:
    name: str
    statement: str
    run: Callable[[], _Proof]


#: Every proof, in the order verify_all() runs them.
_PROOFS: list[_Registered] = []


def _register(name: str, statement: str) -> Callable[[Callable[[], _Proof]], Callable[[], _Proof]]:
    def wrap(fn: Callable[[], _Proof]) -> Callable[[], _Proof]:
        _PROOFS.append(_Registered(name, statement, fn))
        return fn

    return wrap


@_register(
    "objective_per_dimension",
    "L(D,E,C) of paper-notes 2.2 = sum_i L(d_i,e_i,c_i;lam_i) + sum_{unused} lam_j/2 for D, E"
    " aligned with the eigenvectors of S",
)
def _proof_objective_reduction() -> _Proof:
    """The matrix objective of paper-notes 2.2 equals the sum of per-dimension objectives when
    D, E are aligned with the eigenvectors of S (n = 2, arbitrary rotation angle)."""
    import sympy as sp

    th = sp.Symbol("theta", real=True)
    l1, l2, c1, c2, beta = sp.symbols("lam1 lam2 c1 c2 beta", positive=True)
    d1, d2, e1, e2 = sp.symbols("d1 d2 e1 e2", real=True)
    U = sp.Matrix([[sp.cos(th), -sp.sin(th)], [sp.sin(th), sp.cos(th)]])
    S = U * sp.diag(l1, l2) * U.T
    half = sp.Rational(1, 2)

    def matrix_loss(D: Any, E: Any, C: Any, k: int) -> Any:
        distortion = half * ((S).trace() - 2 * (D * E * S).trace()
                             + (E.T * D.T * D * E * S).trace() + (D * C * D.T).trace())
        rate = half * (-sum(sp.log(C[i, i]) for i in range(k)) + (E.T * E * S).trace()
                       + C.trace() - k)
        return distortion + beta * rate

    p = _Proof()
    # k = 2 latents: both eigen-directions used.
    D2 = U * sp.diag(d1, d2)
    E2 = sp.diag(e1, e2) * U.T
    total = (per_dimension_objective(d1, e1, c1, l1, beta).loss
             + per_dimension_objective(d2, e2, c2, l2, beta).loss)
    p.equal("k=2: L_matrix(U diag(d), diag(e) U^T, diag(c)) - sum_i L_i = 0 for any rotation U",
            sp.expand(matrix_loss(D2, E2, sp.diag(c1, c2), 2)), total)
    # k = 1 latent: the unused eigen-direction contributes lam2/2 to the distortion.
    D1 = U[:, 0] * d1
    E1 = e1 * U[:, 0].T
    p.equal("k=1: L_matrix = L_1 + lam2/2 (unused direction keeps its variance)",
            sp.expand(matrix_loss(D1, E1, sp.Matrix([[c1]]), 1)),
            per_dimension_objective(d1, e1, c1, l1, beta).loss + l2 / 2)
    return p


@_register(
    "best_response_encoder_covariance",
    "dL/dc=0 <=> c*(d)=beta/(d^2+beta); dL/de=0 <=> e*(d)=d/(d^2+beta); unique minimisers",
)
def _proof_best_responses() -> _Proof:
    """dL/dc = 0 -> c*(d) = beta/(d^2+beta); dL/de = 0 -> e*(d) = d/(d^2+beta) (Eqs. 21-22),
    unique and minimising: L is strictly convex in (e, c) for a fixed d."""
    import sympy as sp

    obj = per_dimension_objective()
    L, d, e, c, lam, beta = obj.loss, obj.d, obj.e, obj.c, obj.lam, obj.beta
    p = _Proof()
    sol_c = sp.solve(sp.diff(L, c), c)
    p.fact(f"solve(dL/dc=0, c) has one root (c>0): {sol_c}", len(sol_c) == 1)
    if sol_c:
        p.equal("root == beta/(d^2+beta)", sol_c[0], beta / (d**2 + beta))
    sol_e = sp.solve(sp.diff(L, e), e)
    p.fact(f"solve(dL/de=0, e) has one root: {sol_e}", len(sol_e) == 1)
    if sol_e:
        p.equal("root == d/(d^2+beta)", sol_e[0], d / (d**2 + beta))
    p.equal("d2L/dc2 = beta/(2c^2)", sp.diff(L, c, 2), beta / (2 * c**2))
    p.positive("d2L/dc2 > 0", sp.diff(L, c, 2))
    p.positive("d2L/de2 = lam(d^2+beta) > 0", sp.diff(L, e, 2))
    p.equal("d2L/(de dc) = 0 (so L is strictly convex in (e,c): best responses are minimisers)",
            sp.diff(L, e, c), 0)
    return p


def _profile_loss() -> tuple[Any, Any, Any, Any]:
    import sympy as sp

    obj = per_dimension_objective()
    d, lam, beta = obj.d, obj.lam, obj.beta
    Lp = obj.loss.subs({obj.e: d / (d**2 + beta), obj.c: beta / (d**2 + beta)})
    return Lp, d, lam, beta


@_register(
    "decoder_stationary_points",
    "with e*(d), c*(d) substituted, dL/dd=0 <=> d=0 or d^2=lam-beta",
)
def _proof_decoder_stationary() -> _Proof:
    """With the best responses substituted, dL/dd = 0 at d = 0 and d^2 = lam - beta only."""
    import sympy as sp

    Lp, d, lam, beta = _profile_loss()
    obj = per_dimension_objective(d=d, lam=lam, beta=beta)
    p = _Proof()
    closed = beta / 2 * (lam / (d**2 + beta) + sp.log((d**2 + beta) / beta))
    p.equal("profile loss L(d,e*(d),c*(d)) = beta/2 [lam/(d^2+beta) + log((d^2+beta)/beta)]",
            Lp, closed)
    dLp = sp.diff(Lp, d)
    target = beta * d * (d**2 + beta - lam) / (d**2 + beta) ** 2
    p.equal("dL/dd (total) = beta d (d^2 + beta - lam)/(d^2+beta)^2", dLp, target)
    partial = sp.diff(obj.loss, obj.d).subs({obj.e: d / (d**2 + beta), obj.c: beta / (d**2 + beta)})
    p.equal("envelope: partial dL/dd at (e*,c*) equals the total derivative", partial, target)
    roots = sp.solve(sp.numer(sp.together(target)), d)
    expected = {sp.Integer(0), sp.sqrt(lam - beta), -sp.sqrt(lam - beta)}
    p.fact(f"solve(dL/dd=0, d) = {sorted(map(str, roots))} == {{0, +-sqrt(lam-beta)}}",
           set(map(sp.simplify, roots)) == set(map(sp.simplify, expected)))
    return p


@_register(
    "joint_optimum_is_global",
    "min over (d,e,c): d^2=(lam-beta)_+ (q=d^2+beta: loss decreasing for q<lam, increasing "
    "for q>lam)",
)
def _proof_global_optimum() -> _Proof:
    """In q = d^2 + beta >= beta the profile loss is beta/2 (lam/q + log q/beta); it falls for
    q < lam and rises for q > lam, so the global minimiser is d^2 = (lam - beta)_+."""
    import sympy as sp

    S = _symbols()
    lam, beta, s = S["lam"], S["beta"], S["s"]
    q = sp.Symbol("q", positive=True)
    g = lam / q + sp.log(q / beta)
    dg = sp.diff(g, q)
    p = _Proof()
    p.equal("d/dq [lam/q + log(q/beta)] = (q - lam)/q^2", dg, (q - lam) / q**2)
    p.positive("q > lam (q = lam + s): derivative > 0", dg, {q: lam + s})
    p.negative("q < lam (lam = q + s): derivative < 0", dg, {lam: q + s})
    # The profile loss -> oo as d -> oo (coercive), so a global minimum exists.
    Lp, d, lam_p, beta_p = _profile_loss()
    p.fact("lim_{d->oo} L(d,e*(d),c*(d)) = oo",
           sp.limit(Lp.subs(d, sp.Symbol("x", positive=True)), sp.Symbol("x", positive=True),
                    sp.oo) == sp.oo)
    return p


@_register(
    "active_beats_collapsed",
    "0<beta<lam: L(d=sqrt(lam-beta)) - L(d=0) = -(lam-beta-beta*log(lam/beta))/2 < 0",
)
def _proof_active_beats_collapsed() -> _Proof:
    """For 0 < beta < lam: L(active) - L(collapsed) = -(lam - beta - beta log(lam/beta))/2 < 0."""
    import sympy as sp

    S = _symbols()
    lam, beta, s = S["lam"], S["beta"], S["s"]
    r = sp.Symbol("r", positive=True)
    active = per_dimension_objective(*_joint_point(lam, beta, True), lam=lam, beta=beta).loss
    collapsed = per_dimension_objective(*_joint_point(lam, beta, False), lam=lam, beta=beta).loss
    p = _Proof()
    p.equal("L(d=0, e=0, c=1) = lam/2", collapsed, lam / 2)
    gap = -(lam - beta - beta * sp.log(lam / beta)) / 2
    p.equal("L(sqrt(lam-beta)) - L(0) = -(lam - beta - beta log(lam/beta))/2", active - collapsed,
            gap, {lam: beta + s})
    # with lam = beta r: gap = -(beta/2) f(r), f(r) = r - 1 - log r; f(1) = 0, f' > 0 on r > 1.
    f = r - 1 - sp.log(r)
    p.equal("gap = -(beta/2) f(lam/beta), f(r) = r - 1 - log r", gap, -(beta / 2) * f,
            {lam: beta * r})
    p.equal("f(1) = 0", f.subs(r, 1), 0)
    p.positive("f'(r) = 1 - 1/r > 0 for r = 1 + s > 1  (so f(r) > 0 for r > 1)",
               sp.diff(f, r), {r: 1 + s})
    p.positive("beta/2 > 0", beta / 2)
    return p


def _leading_minors(H: Any) -> list[Any]:
    return [H[:k, :k].det() for k in range(1, H.shape[0] + 1)]


def _hessian(active: bool) -> tuple[Any, Any]:
    import sympy as sp

    obj = per_dimension_objective()
    H = sp.hessian(obj.loss, (obj.d, obj.e, obj.c))
    point = dict(zip((obj.d, obj.e, obj.c), _joint_point(obj.lam, obj.beta, active)))
    return H.subs(point), obj


@_register(
    "hessian_positive_definite_active",
    "0<beta<lam: Hessian of L in (d,e,c) at the joint optimum has minors 1, 4beta(lam-beta), "
    "lam^2(lam-beta) > 0",
)
def _proof_hessian_active() -> _Proof:
    """Hessian of L in (d, e, c) at the active joint optimum is positive definite (beta < lam)."""
    import sympy as sp

    H, obj = _hessian(True)
    w = _symbols()["w"]
    branch = {obj.lam: obj.beta + w**2}  # beta < lam, sqrt(lam - beta) = w > 0
    minors = _leading_minors(H)
    p = _Proof()
    expected = [sp.Integer(1), 4 * obj.beta * w**2, (obj.beta + w**2) ** 2 * w**2]
    for k, (m, m_exp) in enumerate(zip(minors, expected), start=1):
        p.equal(f"minor {k} = {m_exp} (lam = beta + w^2)", m, m_exp, branch)
        p.positive(f"minor {k} > 0", m, branch)
    return p


@_register(
    "collapsed_point_stability",
    "(d,e,c)=(0,0,1): Hessian positive definite for beta>lam, indefinite for beta<lam",
)
def _proof_hessian_collapsed() -> _Proof:
    """At (d, e, c) = (0, 0, 1): a strict local minimum iff beta > lam, a saddle for beta < lam."""
    H, obj = _hessian(False)
    lam, beta = obj.lam, obj.beta
    s = _symbols()["s"]
    minors = _leading_minors(H)
    p = _Proof()
    p.equal("minor 2 = lam (beta - lam)", minors[1], lam * (beta - lam))
    p.equal("minor 3 = beta lam (beta - lam)/2", minors[2], beta * lam * (beta - lam) / 2)
    for k, m in enumerate(minors, start=1):
        p.positive(f"beta > lam (beta = lam + s): minor {k} > 0", m, {beta: lam + s})
    p.negative("beta < lam (lam = beta + s): minor 2 < 0 (saddle: collapse is not optimal)",
               minors[1], {lam: beta + s})
    return p


@_register(
    "rate_distortion_at_optimum",
    "per dim: R=1/2 log(lam/beta), D=beta/2 (active) | R=0, D=lam/2 (collapsed); "
    "D(beta)=1/2[trS - sum_active(lam_i-beta)]",
)
def _proof_rate_distortion() -> _Proof:
    """Rate 1/2 log(lam/beta)_+ and distortion 1/2[lam - (lam-beta)_+] per dimension at the
    joint optimum; summed: D(beta) = 1/2[tr S - sum_active (lam_i - beta)]."""
    import sympy as sp

    S = _symbols()
    lam, beta, s0, s = S["lam"], S["beta"], S["s0"], S["s"]
    act = per_dimension_objective(*_joint_point(lam, beta, True), lam=lam, beta=beta)
    col = per_dimension_objective(*_joint_point(lam, beta, False), lam=lam, beta=beta)
    on = {lam: beta + s}
    off = {beta: lam + s0}
    dist_pw = (lam - sp.Max(0, lam - beta)) / 2
    rate_pw = sp.Max(0, sp.log(lam / beta)) / 2
    p = _Proof()
    p.equal("active (lam = beta + s): rate = log(lam/beta)/2", act.rate, sp.log(lam / beta) / 2, on)
    p.equal("active: distortion = beta/2", act.distortion, beta / 2, on)
    p.equal("collapsed: rate = 0", col.rate, 0)
    p.equal("collapsed: distortion = lam/2", col.distortion, lam / 2)
    p.equal("active: distortion = (lam - max(0, lam-beta))/2", act.distortion, dist_pw, on)
    p.equal("collapsed (beta = lam + s0): distortion = (lam - max(0, lam-beta))/2",
            col.distortion, dist_pw, off)
    p.equal("active: rate = max(0, log(lam/beta))/2", act.rate, rate_pw, on)
    p.equal("collapsed: rate = max(0, log(lam/beta))/2", col.rate, rate_pw, off)
    # Summing over dimensions: latents give (lam_i - (lam_i - beta)_+)/2 each and unused
    # directions lam_j/2 (objective_per_dimension), so D(beta) = 1/2[tr S - sum_active(lam_i-beta)].
    # The n active dimensions (indices 1..n after sorting) contribute beta/2 each:
    n = sp.Symbol("n", positive=True, integer=True)
    i = sp.Symbol("i", positive=True, integer=True)
    lam_i = sp.IndexedBase("lam", positive=True)
    active_sum = sp.Sum(act.distortion.subs(lam, lam_i[i]), (i, 1, n)).doit()
    p.equal("sum over n active dims of D_i = sum (lam_i - (lam_i - beta))/2 = n beta/2",
            active_sum, sp.Sum((lam_i[i] - (lam_i[i] - beta)) / 2, (i, 1, n)).doit())
    return p


@_register(
    "rd_slope",
    "along the optimal R-D curve dD/dR = -beta",
)
def _proof_rd_slope() -> _Proof:
    """dD/dR = -beta along the optimal curve: per dimension dD_i/dbeta + beta dR_i/dbeta = 0 on
    both branches, hence for the sums; with n active dims dD/dbeta = n/2, dR/dbeta = -n/(2 beta)."""
    import sympy as sp

    S = _symbols()
    lam, beta = S["lam"], S["beta"]
    act = per_dimension_objective(*_joint_point(lam, beta, True), lam=lam, beta=beta)
    col = per_dimension_objective(*_joint_point(lam, beta, False), lam=lam, beta=beta)
    p = _Proof()
    p.equal("active: dD_i/dbeta + beta dR_i/dbeta = 0",
            sp.diff(act.distortion, beta) + beta * sp.diff(act.rate, beta), 0)
    p.equal("collapsed: dD_i/dbeta = dR_i/dbeta = 0",
            sp.diff(col.distortion, beta) ** 2 + sp.diff(col.rate, beta) ** 2, 0)
    n = sp.Symbol("n", positive=True, integer=True)
    i = sp.Symbol("i", positive=True, integer=True)
    lam_i = sp.IndexedBase("lam", positive=True)
    trS = sp.Symbol("trS", positive=True)
    D_total = (trS - sp.Sum(lam_i[i] - beta, (i, 1, n))) / 2
    R_total = sp.Sum(sp.log(lam_i[i]) - sp.log(beta), (i, 1, n)) / 2
    dD = sp.diff(D_total, beta).doit()
    dR = sp.diff(R_total, beta).doit()
    p.equal("n active dims: dD/dbeta = n/2", dD, n / 2)
    p.equal("n active dims: dR/dbeta = -n/(2 beta)", dR, -n / (2 * beta))
    p.equal("dD/dR = (dD/dbeta)/(dR/dbeta) = -beta", dD / dR, -beta)
    return p


@_register(
    "decoder_sqrt_gate",
    "optimal decoder sqrt((lam-beta)_+) = sqrt(lam)*sqrt_gate(log beta - log lam), both "
    "branches",
)
def _proof_decoder_sqrt_gate() -> _Proof:
    """sqrt((lam - beta)_+) = sqrt(lam) * sqrt_gate(log beta - log lam) on both branches."""
    import sympy as sp

    S = _symbols()
    lam, beta, s, s0 = S["lam"], S["beta"], S["s"], S["s0"]
    lhs = sp.sqrt(sp.Max(0, lam - beta))
    rhs = sp.sqrt(lam) * sym_sqrt_gate(sp.log(beta) - sp.log(lam))
    p = _Proof()
    p.equal("beta < lam (lam = beta + s): both sides = sqrt(s)", lhs, rhs, {lam: beta + s})
    p.equal("beta >= lam (beta = lam + s0): both sides = 0", lhs, 0, {beta: lam + s0})
    p.equal("beta >= lam (beta = lam + s0): gate side = 0", rhs, 0, {beta: lam + s0})
    return p


@_register(
    "sigmoid_gate_best_response",
    "d>0: e*(d)=(1/d)*sigmoid(2log d - log beta), c*(d)=sigmoid(log beta - log d^2) (Thm 1)",
)
def _proof_sigmoid_best_response() -> _Proof:
    """Theorem 1 (scalar): e*(d) = (1/d) sigmoid(2 log d - log beta), c*(d) = sigmoid(log beta -
    log d^2) for d > 0; c*(0) = 1 = 2 sigmoid(0)."""
    import sympy as sp

    beta = _symbols()["beta"]
    d = sp.Symbol("d", positive=True)
    p = _Proof()
    p.equal("d/(d^2+beta) == (1/d) sigmoid(2 log d - log beta)",
            d / (d**2 + beta), sym_sigmoid(2 * sp.log(d) - sp.log(beta)) / d)
    p.equal("beta/(d^2+beta) == sigmoid(log beta - log d^2)",
            beta / (d**2 + beta), sym_sigmoid(sp.log(beta) - sp.log(d**2)))
    p.equal("d = 0: c*(0) = beta/(0+beta) = 1 = 2 sigmoid(0) (paper's base-2 construction)",
            (beta / (d**2 + beta)).subs(d, 0), 2 * sym_sigmoid(0))
    p.equal("d = 0: e*(0) = 0", (d / (d**2 + beta)).subs(d, 0), 0)
    return p


@_register(
    "encoder_sqrt_gate_joint",
    "joint e(beta)=sqrt((lam-beta)_+)/lam=lam^-1/2*sqrt_gate(log beta - log lam); "
    "c(beta)=min(1,beta/lam)",
)
def _proof_encoder_sqrt_gate_joint() -> _Proof:
    """Joint encoder e(beta) = e*(d_joint) = sqrt((lam-beta)_+)/lam = lam^(-1/2) sqrt_gate(...)
    and joint covariance c(beta) = c*(d_joint) = min(1, beta/lam), on both branches."""
    import sympy as sp

    S = _symbols()
    lam, beta, s, s0 = S["lam"], S["beta"], S["s"], S["s0"]
    on, off = {lam: beta + s}, {beta: lam + s0}
    e_joint = sp.sqrt(sp.Max(0, lam - beta)) / lam
    gate = sym_sqrt_gate(sp.log(beta) - sp.log(lam))
    e_gate = gate / sp.sqrt(lam)
    c_joint = sp.Min(1, beta / lam)

    def e_br(dd: Any) -> Any:
        return dd / (dd**2 + beta)

    def c_br(dd: Any) -> Any:
        return beta / (dd**2 + beta)

    d_on, _, _ = _joint_point(lam, beta, True)
    p = _Proof()
    p.equal("beta < lam: e*(sqrt(lam-beta)) = sqrt(lam-beta)/lam", e_br(d_on), e_joint, on)
    p.equal("beta < lam: sqrt(lam-beta)/lam = lam^(-1/2) sqrt_gate(log beta - log lam)",
            e_joint, e_gate, on)
    p.equal("beta >= lam: e*(0) = 0 = e_joint", e_br(sp.Integer(0)), e_joint, off)
    p.equal("beta >= lam: lam^(-1/2) sqrt_gate(log beta - log lam) = 0", e_gate, 0, off)
    p.equal("beta < lam: c*(sqrt(lam-beta)) = beta/lam = min(1, beta/lam)", c_br(d_on), c_joint, on)
    p.equal("beta >= lam: c*(0) = 1 = min(1, beta/lam)", c_br(sp.Integer(0)), c_joint, off)
    p.equal("beta < lam: c_joint = 1 - sqrt_gate(log beta - log lam)^2", c_joint, 1 - gate**2, on)
    p.equal("beta >= lam: c_joint = 1 - sqrt_gate(log beta - log lam)^2", c_joint, 1 - gate**2,
            off)
    return p


@_register(
    "covariance_exp_min_gate_joint",
    "joint c(beta)=min(1,beta/lam)=exp_min_gate(log beta - log lam); exp_min_gate(x)=1-sqrt_gate(x)^2",
)
def _proof_covariance_exp_min_gate_joint() -> _Proof:
    """The joint optimum's posterior variance min(1, beta/lam) is the exp-min gate exp(min(x, 0)) at
    x = log beta - log lam on both branches, and exp_min_gate = 1 - sqrt_gate^2 for every real x."""
    import sympy as sp

    S = _symbols()
    lam, beta, s, s0 = S["lam"], S["beta"], S["s"], S["s0"]
    on, off = {lam: beta + s}, {beta: lam + s0}
    c_joint = sp.Min(1, beta / lam)
    gate = sym_exp_min_gate(sp.log(beta) - sp.log(lam))
    x = sp.Symbol("x", real=True)
    p = _Proof()
    p.equal("beta < lam: min(1, beta/lam) = beta/lam = exp_min_gate(log beta - log lam)", c_joint, gate, on)
    p.equal("beta >= lam: min(1, beta/lam) = 1 = exp_min_gate(log beta - log lam)", c_joint, gate, off)
    # the branches of x written through e^x (x < 0: e^x = 1/(1+s); x >= 0: e^x = 1+s0), so that
    # sympy can decide the sign of 1 - e^x inside sqrt_gate's Max
    p.equal("x = -log(1+s) < 0: exp_min_gate(x) = e^x = 1 - sqrt_gate(x)^2",
            sym_exp_min_gate(x), 1 - sym_sqrt_gate(x) ** 2, {x: -sp.log(1 + s)})
    p.equal("x = log(1+s0) >= 0: exp_min_gate(x) = 1 = 1 - sqrt_gate(x)^2",
            sym_exp_min_gate(x), 1 - sym_sqrt_gate(x) ** 2, {x: sp.log(1 + s0)})
    return p


@_register(
    "sigmoid_cannot_vanish",
    "e_joint(beta)=0 for all beta>=lam but scale*sigmoid(w log beta + b) != 0 for every beta",
)
def _proof_sigmoid_cannot_vanish() -> _Proof:
    """(a) e_joint = 0 for every beta >= lam, while scale * sigmoid(w log beta + b) != 0 for all
    beta (sigmoid > 0), also for products of sigmoid gates."""
    import sympy as sp

    S = _symbols()
    lam, beta, s0 = S["lam"], S["beta"], S["s0"]
    w, b, w2, b2 = sp.symbols("w b w2 b2", real=True)
    scale = sp.Symbol("scale", real=True, nonzero=True)
    e_joint = sp.sqrt(sp.Max(0, lam - beta)) / lam
    sig = sym_sigmoid(w * sp.log(beta) + b)
    p = _Proof()
    p.equal("beta = lam + s0 (s0 >= 0): e_joint(beta) = 0", e_joint, 0, {beta: lam + s0})
    p.positive("sigmoid(w log beta + b) > 0 for all real w, b and beta > 0", sig)
    p.fact("scale * sigmoid(w log beta + b) is nonzero for scale != 0",
           (scale * sig).is_zero is False)
    p.fact("product of two sigmoid gates times scale is nonzero",
           (scale * sig * sym_sigmoid(w2 * sp.log(beta) + b2)).is_zero is False)
    return p


@_register(
    "sigmoid_cannot_match_kink",
    "d e_joint/d beta -> -oo as beta->lam-, while d/dbeta of sigmoid(w log beta + b) is "
    "bounded on compact beta intervals",
)
def _proof_sigmoid_cannot_match_kink() -> _Proof:
    """(b) d e_joint/d beta -> -oo as beta -> lam-, while d/dbeta sigmoid(w log beta + b) =
    (w/beta) sigma (1 - sigma) is bounded by |w|/(4 beta_min) on [beta_min, oo)."""
    import sympy as sp

    S = _symbols()
    lam, beta, s = S["lam"], S["beta"], S["s"]
    w, b = sp.symbols("w b", real=True)
    x = sp.Symbol("x", real=True)
    p = _Proof()
    e_active = sp.sqrt(lam - beta) / lam  # e_joint on beta < lam
    de = sp.diff(e_active, beta)
    p.equal("d e_joint/d beta = -1/(2 lam sqrt(lam - beta)) for beta < lam", de,
            -1 / (2 * lam * sp.sqrt(lam - beta)), {lam: beta + s})
    # beta = lam - s, s -> 0+ (sympy 1.14's limit(..., beta, lam, '-') on this expression returns
    # +oo, a sympy bug, so the one-sided limit is taken in the gap s instead).
    lim = sp.limit(de.subs(beta, lam - s), s, 0, "+")
    p.fact(f"lim_(s->0+) d e_joint/d beta at beta = lam - s is {lim} (= -oo)", lim == -sp.oo)
    p.negative("d e_joint/d beta < 0 on beta < lam", de, {lam: beta + s})
    sig = sym_sigmoid(w * sp.log(beta) + b)
    dsig = sp.diff(sig, beta)
    p.equal("d/dbeta sigmoid(w log beta + b) = (w/beta) sigma (1 - sigma)", dsig,
            w / beta * sig * (1 - sig))
    sx = sym_sigmoid(x)
    p.equal("sigma(1 - sigma) = 1/4 - (sigma - 1/2)^2", sx * (1 - sx),
            sp.Rational(1, 4) - (sx - sp.Rational(1, 2)) ** 2)
    p.nonnegative("(sigma - 1/2)^2 >= 0, so 0 < sigma(1-sigma) <= 1/4 and "
                  "|d sigmoid/d beta| <= |w|/(4 beta_min) on [beta_min, beta_max]",
                  (sx - sp.Rational(1, 2)) ** 2)
    p.positive("sigma(1 - sigma) > 0", sx * (1 - sx))
    return p


@_register(
    "hyper_input_standardised",
    "u=(log beta - mid)/(half/sqrt3), log beta~U[log a,log b]: E[u]=0, Var[u]=1, u in "
    "[-sqrt3,sqrt3]",
)
def _proof_hyper_input_moments() -> _Proof:
    """u = (log beta - mid)/(half/sqrt 3) with log beta ~ U[log a, log b]: E[u] = 0, Var[u] = 1,
    range [-sqrt 3, sqrt 3]."""
    import sympy as sp

    la = sp.Symbol("log_a", real=True)
    h = sp.Symbol("width", positive=True)  # log b - log a > 0
    lb = la + h
    eta = sp.Symbol("eta", real=True)
    mid = (la + lb) / 2
    half = (lb - la) / 2
    u = (eta - mid) / (half / sp.sqrt(3))
    density = 1 / (lb - la)
    mean = sp.integrate(u * density, (eta, la, lb))
    second = sp.integrate(u**2 * density, (eta, la, lb))
    p = _Proof()
    p.equal("integral of density = 1", sp.integrate(density, (eta, la, lb)), 1)
    p.equal("E[u] = 0", mean, 0)
    p.equal("Var[u] = E[u^2] - E[u]^2 = 1", second - mean**2, 1)
    p.equal("u(log a) = -sqrt(3)", u.subs(eta, la), -sp.sqrt(3))
    p.equal("u(log b) = +sqrt(3)", u.subs(eta, lb), sp.sqrt(3))
    return p


@_register(
    "affine_gate_reparametrisation",
    "w*log beta + b = w'*u + b' with w'=w*half/sqrt3, b'=b+w*mid (same gate family in u)",
)
def _proof_affine_reparametrisation() -> _Proof:
    """w log beta + b = w' u + b' with w' = w half/sqrt 3, b' = b + w mid; the map is invertible
    (half > 0), so gates in u and in log beta are the same family."""
    import sympy as sp

    la = sp.Symbol("log_a", real=True)
    h = sp.Symbol("width", positive=True)
    lb = la + h
    eta, w, b = sp.symbols("eta w b", real=True)
    mid = (la + lb) / 2
    half = (lb - la) / 2
    u = (eta - mid) / (half / sp.sqrt(3))
    w_u = w * half / sp.sqrt(3)
    b_u = b + w * mid
    wp, bp = sp.symbols("wp bp", real=True)
    w_back = wp * sp.sqrt(3) / half
    b_back = bp - w_back * mid
    p = _Proof()
    p.equal("w log beta + b == w' u + b'", w * eta + b, w_u * u + b_u)
    p.equal("inverse: w'' log beta + b'' == w' u + b' with w''=w' sqrt3/half, b''=b'-w'' mid",
            w_back * eta + b_back, wp * u + bp)
    p.positive("half = (log b - log a)/2 > 0 (map is a bijection)", half)
    return p


#: Names of the identities, in the order verify_all() returns them.
PROOF_NAMES: tuple[str, ...] = tuple(entry.name for entry in _PROOFS)


def verify_all() -> list[Identity]:
    """Run every proof (about 3 s on one core) and return one :class:`Identity` each.

    Never raises: a proof that errors is returned with ``proved=False`` and the error in
    ``detail``.  The detail of each identity also records how long its proof took.
    """
    results: list[Identity] = []
    for entry in list(_PROOFS):
        start = time.perf_counter()
        try:
            proof = entry.run()
            proved = bool(proof.steps) and all(ok for _, ok in proof.steps)
            detail = proof.detail()
        except Exception as exc:  # noqa: BLE001 - report, never raise
            proved, detail = False, f"proof raised {type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - start
        results.append(Identity(entry.name, entry.statement, proved, f"{detail} ({elapsed:.2f} s)"))
    return results


def format_report(identities: list[Identity], details: bool = False) -> str:
    """Plain-text table: name, PROVED / NOT PROVED, statement (and the detail when asked)."""
    rows = [(i.name, "PROVED" if i.proved else "NOT PROVED", i.statement) for i in identities]
    w_name = max([len("identity")] + [len(r[0]) for r in rows])
    w_stat = max([len("status")] + [len(r[1]) for r in rows])
    lines = [f"{'identity':<{w_name}}  {'status':<{w_stat}}  statement",
             f"{'-' * w_name}  {'-' * w_stat}  {'-' * 9}"]
    for identity, (name, status, statement) in zip(identities, rows):
        lines.append(f"{name:<{w_name}}  {status:<{w_stat}}  {statement}")
        if details or not identity.proved:
            lines.append(f"{'':<{w_name}}  {'':<{w_stat}}  detail: {identity.detail}")
    n_ok = sum(i.proved for i in identities)
    lines.append(f"{n_ok}/{len(identities)} identities proved with sympy")
    return "\n".join(lines)
