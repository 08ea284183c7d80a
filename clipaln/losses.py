"""Preference losses for a CLIP policy (docs/method.md section 2), each a few lines beside its equation.

Shapes: logp, ref_logp are (N, K) log-probabilities over the action set (policy.logprobs);
y_w, y_l are (N,) indices of the preferred and dispreferred action; h is (N,).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _take(logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y = torch.as_tensor(y)
    if logp.ndim != 2 or y.ndim != 1 or len(y) != len(logp):
        raise ValueError(
            f"expected (N, K) log-probabilities and (N,) indices, got {tuple(logp.shape)} and {tuple(y.shape)}"
        )
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= logp.shape[1]):
        raise ValueError(f"action indices must lie in [0, {logp.shape[1]})")
    return logp.gather(-1, y.long().unsqueeze(-1)).squeeze(-1)  # (N,)


def preference_margin(logp: torch.Tensor, ref_logp: torch.Tensor, y_w: torch.Tensor, y_l: torch.Tensor) -> torch.Tensor:
    """The preference margin h (Lemma 3.1 of Afzali et al. 2025):

        h = [log pi(y_w|x) - log pi(y_l|x)] - [log pi_ref(y_w|x) - log pi_ref(y_l|x)].

    With the text encoder frozen the softmax normalisers cancel inside each bracket, so
    h = tau [(s(y_w,x) - s(y_l,x)) - (s_ref(y_w,x) - s_ref(y_l,x))].

    Args:
        logp: (N, K) policy log-probabilities.
        ref_logp: (N, K) reference log-probabilities.
        y_w: (N,) preferred action indices.
        y_l: (N,) dispreferred action indices.

    Returns:
        torch.Tensor: (N,) margins.
    """
    return (_take(logp, y_w) - _take(logp, y_l)) - (_take(ref_logp, y_w) - _take(ref_logp, y_l))


def dpo(h: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO, L = -log sigmoid(beta h) (Eq. 7 of Rafailov et al. 2023, arXiv 2305.18290).

    Args:
        h: (N,) preference margins (preference_margin).
        beta: the inverse temperature; larger keeps the policy nearer pi_ref.

    Returns:
        torch.Tensor: (N,) per-pair losses.
    """
    return -F.logsigmoid(beta * h)


def ipo(h: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO, L = (h - 1/(2 beta))^2 (Eq. 17 of Azar et al. 2023, arXiv 2310.12036): a squared loss
    whose optimum is the finite margin h* = 1/(2 beta).

    Args:
        h: (N,) preference margins.
        beta: sets the target margin 1/(2 beta).

    Returns:
        torch.Tensor: (N,) per-pair losses.
    """
    return (h - 1 / (2 * beta)) ** 2


#: cDPO's label smoothing: the share of pairs assumed to be mislabelled (TRL's default range).
LABEL_SMOOTHING = 0.1


def cdpo(h: torch.Tensor, beta: float, eps: float = LABEL_SMOOTHING) -> torch.Tensor:
    """Conservative DPO, L = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h) (Mitchell 2023,
    "A note on DPO with noisy preferences"; TRL's label_smoothing). Its optimum is a finite margin,
    h* = log((1 - eps) / eps) / beta, instead of an ever larger one.

    Args:
        h: (N,) preference margins.
        beta: the inverse temperature.
        eps: the share of pairs assumed mislabelled, in [0, 1/2).

    Returns:
        torch.Tensor: (N,) per-pair losses.
    """
    return -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)


def policy_margin(logp: torch.Tensor, y_w: torch.Tensor, y_l: torch.Tensor) -> torch.Tensor:
    """m = log pi(y_w|x) - log pi(y_l|x), the margin without a reference, (N,)."""
    return _take(logp, y_w) - _take(logp, y_l)


def multi_dpo(logp: torch.Tensor, ref_logp: torch.Tensor, y_w: torch.Tensor, beta: float) -> torch.Tensor:
    """Multi-negative DPO: every other class is a rejected action, in the Plackett-Luce (top-1)
    form of DPO's Bradley-Terry model (Rafailov et al. 2023, App. A.3; Chen et al. 2024, "Softmax
    DPO"), (N,):
        L = -log [exp(beta r(y_w)) / sum_y exp(beta r(y))],  r(y) = log pi(y|x) - log pi_ref(y|x).
    With two classes it is DPO."""
    r = beta * (logp - ref_logp)  # (N, K)
    return -(_take(r, y_w) - torch.logsumexp(r, dim=-1))


def multi_dpo_weights(logp: torch.Tensor, ref_logp: torch.Tensor, y_w: torch.Tensor, beta: float) -> torch.Tensor:
    """-dL/dr(y) of multi-negative DPO, (N, K): beta (1 - p(y_w)) for y_w and -beta p(y) for every
    other class, p = softmax(beta r): each wrong class is pushed down in proportion to how much
    probability it holds (DPO's sigmoid weight, spread over the negatives)."""
    p = torch.softmax(beta * (logp - ref_logp), dim=-1)
    onehot = F.one_hot(torch.as_tensor(y_w).long(), logp.shape[-1]).to(p.dtype)
    return beta * (onehot - p)


def kto(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    y_w: torch.Tensor,
    y_l: torch.Tensor,
    beta: float,
    z0: torch.Tensor | float,
) -> torch.Tensor:
    """KTO, unpaired form (Ethayarajh et al. 2024, arXiv 2402.01306), with r(y) = log pi(y|x) - log pi_ref(y|x):

        desirable:    1 - sigmoid(beta (r(y_w) - z0))
        undesirable:  1 - sigmoid(beta (z0 - r(y_l)))

    z0 estimates KL(pi || pi_ref) (kl_batch_estimate); it is detached and clamped at 0, as in the KTO
    paper, so it only sets the reference point.

    Args:
        logp: (N, K) policy log-probabilities.
        ref_logp: (N, K) reference log-probabilities.
        y_w: (N,) desirable action indices.
        y_l: (N,) undesirable action indices.
        beta: the inverse temperature.
        z0: the reference point, a scalar.

    Returns:
        torch.Tensor: (N, 2) per-sample losses, column 0 desirable and column 1 undesirable.
    """
    z0 = torch.as_tensor(z0, dtype=logp.dtype, device=logp.device).detach().clamp(min=0)
    r_w = _take(logp, y_w) - _take(ref_logp, y_w)
    r_l = _take(logp, y_l) - _take(ref_logp, y_l)
    return torch.stack([1 - torch.sigmoid(beta * (r_w - z0)), 1 - torch.sigmoid(beta * (z0 - r_l))], dim=-1)


def kl_batch_estimate(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """z0 for KTO: batch mean of KL(pi || pi_ref) on reference (clean) images, detached, >= 0."""
    return (logp.exp() * (logp - ref_logp)).sum(-1).mean().detach().clamp(min=0)


def kl_regularizer(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """L_reg = mean_x KL(pi_ref(.|x) || pi(.|x)) on clean images (docs/method.md section 2).

    Args:
        logp: (M, K) policy log-probabilities on D_reg.
        ref_logp: (M, K) reference log-probabilities on D_reg.

    Returns:
        torch.Tensor: a scalar.
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(
            f"policy and reference log-probabilities differ in shape: {tuple(logp.shape)} vs {tuple(ref_logp.shape)}"
        )
    return F.kl_div(logp, ref_logp, log_target=True, reduction="batchmean")


def ce(logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of pi(.|x') to the true label, the paper's "CE" baseline.

    Args:
        logp: (N, K) policy log-probabilities.
        y: (N,) true action indices.

    Returns:
        torch.Tensor: (N,) per-sample losses.
    """
    return -_take(logp, y)


def _kto_batch(logp, ref_logp, y_w, y_l, beta, z0):
    return kto(logp, ref_logp, y_w, y_l, beta, z0).mean(-1)  # the mean of its two terms


@dataclass(frozen=True)
class Method:
    """One entry of the registry: a per-sample loss with one signature, and how it pushes.

    loss(logp, ref_logp, y_w, y_l, beta, z0) -> (N,);  of_margin(h, beta): L as a function of
    the margin h;  weight(h, beta) = -dL/dh, how hard a sample with margin h pushes I(x) along
    T(y_w) - T(y_l);  paper: the paper's beta and lambda (docs/method.md section 2).
    """

    loss: Callable[..., torch.Tensor]
    of_margin: Callable[[torch.Tensor, float], torch.Tensor] | None
    weight: Callable[[torch.Tensor, float], torch.Tensor] | None
    paper: dict
    uses_z0: bool = False  # KTO: the loop passes the detached KL estimate z0
    options: tuple[str, ...] = ()  # TrainConfig fields the loss takes as keywords (cDPO: label_smoothing)
    schedule: dict | None = None  # lr, epochs, orth, batch_size, bma; None (or a key left out): DPO's
    tasks: tuple[str, ...] = ("typographic", "pairs")  # the tracks that train it (gender: its own DEFAULTS)


#: The schedule tuned for DPO on the typographic track's validation split (docs/toy-world.md), which
#: the other preference losses start from: each method's lr, epochs, orth, batch_size and bma live in
#: its entry below, the one place TrainConfig, the tracks and the command line read them from.
_TUNED = dict(lr=0.003, epochs=30, orth=1.0, batch_size=256, bma=True)

LOSSES: dict[str, Method] = {
    # DPO: -dL/dh = beta sigmoid(-beta h), fades once h is large
    "dpo": Method(
        loss=lambda logp, ref_logp, y_w, y_l, beta, z0: dpo(preference_margin(logp, ref_logp, y_w, y_l), beta),
        of_margin=dpo,
        weight=lambda h, beta: beta * torch.sigmoid(-beta * h),
        paper=dict(beta=1.0, lam=1.0),
        schedule=dict(_TUNED),
    ),
    # IPO: -dL/dh = 2 (1/(2 beta) - h), a spring to the target margin that pulls back on overshoot
    "ipo": Method(
        loss=lambda logp, ref_logp, y_w, y_l, beta, z0: ipo(preference_margin(logp, ref_logp, y_w, y_l), beta),
        of_margin=ipo,
        weight=lambda h, beta: 2 * (1 / (2 * beta) - h),
        paper=dict(beta=0.01, lam=0.01),
        # IPO misses W's target at every setting tried (its smallest singular value stays at or below
        # 0.14 even with orth = 10,000): this is the nearest to it of the grid (docs/toy-world.md)
        schedule=dict(_TUNED, orth=100.0),
    ),
    # KTO, desirable half at z0 = 0: -dL/dh = beta sigmoid(beta h) sigmoid(-beta h), a bump that
    # ignores both easy and hopeless samples
    "kto": Method(
        loss=_kto_batch,
        of_margin=lambda h, beta: 1 - torch.sigmoid(beta * h),
        weight=lambda h, beta: beta * torch.sigmoid(beta * h) * torch.sigmoid(-beta * h),
        paper=dict(beta=1.5, lam=0.01),
        schedule=dict(_TUNED),
        uses_z0=True,
    ),
    # cDPO: -dL/dh = beta [(1 - eps) sigmoid(-beta h) - eps sigmoid(beta h)], zero at h* and negative
    # beyond it: like IPO it stops pushing, but from a logistic loss
    "cdpo": Method(
        loss=lambda logp, ref_logp, y_w, y_l, beta, z0, label_smoothing=LABEL_SMOOTHING: cdpo(
            preference_margin(logp, ref_logp, y_w, y_l), beta, label_smoothing
        ),
        of_margin=cdpo,
        weight=lambda h, beta, label_smoothing=LABEL_SMOOTHING: (
            beta * ((1 - label_smoothing) * torch.sigmoid(-beta * h) - label_smoothing * torch.sigmoid(beta * h))
        ),
        paper=dict(beta=1.0, lam=1.0),
        schedule=dict(_TUNED),  # DPO's setting (`bench.tuning.tune(feats, "cdpo")` can tune one)
        options=("label_smoothing",),
    ),
    # reference-free DPO: DPO on the policy's own margin m (no pi_ref in the loss; the KL term still
    # holds the model near it). of_margin and weight are functions of m, not of h
    "rfdpo": Method(
        loss=lambda logp, ref_logp, y_w, y_l, beta, z0: dpo(policy_margin(logp, y_w, y_l), beta),
        of_margin=dpo,
        weight=lambda m, beta: beta * torch.sigmoid(-beta * m),
        paper=dict(beta=1.0, lam=1.0),
        schedule=dict(_TUNED),
    ),
    # multi-negative DPO: y_l is every wrong class at once (Plackett-Luce); y_l itself is unused.
    # Not a function of one margin: its weights over the classes are multi_dpo_weights
    "mdpo": Method(
        loss=lambda logp, ref_logp, y_w, y_l, beta, z0: multi_dpo(logp, ref_logp, y_w, beta),
        of_margin=None,
        weight=None,
        paper=dict(beta=1.0, lam=1.0),
        schedule=dict(_TUNED),
    ),
    # CE on the attacked image to y_w, the paper's baseline: not a function of the margin
    "ce": Method(
        loss=lambda logp, ref_logp, y_w, y_l, beta, z0: ce(logp, y_w),
        of_margin=None,
        weight=None,
        paper=dict(beta=1.0, lam=0.0),
        # no KL term: the orthogonality penalty alone keeps its W within the target
        schedule=dict(lr=0.01, epochs=10, orth=10.0, batch_size=256, bma=False),
    ),
}
BUILTIN = tuple(LOSSES)
#: Entry-point group of out-of-tree losses: a package names a module (or a function to call) there,
#: and that module calls register() when loaded. load_plugins() loads them; the CLI does at start.
ENTRY_POINTS = "clipaln.losses"


def register(
    name: str,
    loss: Callable[..., torch.Tensor],
    *,
    of_margin: Callable | None = None,
    weight: Callable | None = None,
    paper: dict | None = None,
    schedule: dict | None = None,
    tasks: tuple[str, ...] = ("typographic", "pairs"),
    uses_z0: bool = False,
    options: tuple[str, ...] = (),
) -> Method:
    """Add a loss to the registry, so that TrainConfig, the tracks and ``clipaln train --method NAME``
    train with it. A name already taken by a different loss is refused (registering the same entry
    again, as a re-import does, is not).

    Args:
        name: one word, such as "simpo".
        loss: (logp, ref_logp, y_w, y_l, beta, z0) -> (N,) per-sample losses.
        of_margin: the same loss as a function of the margin, (h, beta) -> (N,), where it has one.
        weight: its gradient weight -dL/dh, (h, beta) -> (N,): how hard a pair with margin h pushes.
        paper: its beta and lam (default 1, 1).
        schedule: its lr, epochs, orth, batch_size, bma (default DPO's).
        tasks: the tracks it is for ("typographic", "pairs", "gender").
        uses_z0: it reads KTO's reference point z0.
        options: the TrainConfig fields it reads beyond beta (such as "label_smoothing").

    Returns:
        Method: the registry's entry.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a loss's name is one word such as 'simpo', got {name!r}")
    for what, given, allowed in (("paper", paper, PAPER_KEYS), ("schedule", schedule, SCHEDULE_KEYS)):
        unknown = sorted(set(given or {}) - set(allowed))
        if unknown:
            raise ValueError(f"the loss {name!r}: {what} sets {', '.join(allowed)}, not {', '.join(unknown)}")
    if not callable(loss):
        raise ValueError(f"the loss {name!r} must be a function (logp, ref_logp, y_w, y_l, beta, z0) -> (N,)")
    unknown = set(tasks) - {"typographic", "pairs", "gender"}
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(sorted(unknown))}: use typographic, pairs, gender")
    entry = Method(
        loss,
        of_margin,
        weight,
        dict(paper or {"beta": 1.0, "lam": 1.0}),
        uses_z0,
        tuple(options),
        dict(schedule) if schedule else None,
        tuple(tasks),
    )
    if name in BUILTIN or (name in LOSSES and LOSSES[name].loss is not loss):  # a re-import registers again
        raise ValueError(f"a loss named {name!r} is already registered: choose another name")
    LOSSES[name] = entry
    return entry


#: The keys register() takes in `paper` and `schedule`.
PAPER_KEYS = ("beta", "lam")
SCHEDULE_KEYS = ("lr", "epochs", "orth", "batch_size", "bma")
#: Plugins that failed to load, by entry-point name: why, in one line (said when a method is asked for).
FAILED_PLUGINS: dict[str, str] = {}


def load_plugins() -> list[str]:
    """Load every installed package's losses (entry-point group "clipaln.losses"); their names.
    A plugin that fails to load (an exception, a missing dependency, SystemExit or KeyboardInterrupt
    raised at import, a name register() refuses) costs only itself: what it registered is taken back,
    and why it failed is kept in FAILED_PLUGINS, for the one line `method()` gives when asked for a
    loss that is not there. Nothing is said to a command that does not ask."""
    from importlib.metadata import entry_points

    before = set(LOSSES)
    for ep in entry_points(group=ENTRY_POINTS):
        registered_before = set(LOSSES)
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except BaseException as e:  # SystemExit and KeyboardInterrupt at import too: a plugin's, not ours
            for name in set(LOSSES) - registered_before:
                del LOSSES[name]
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            FAILED_PLUGINS[ep.name] = f"the loss plugin {ep.name!r} ({ep.value}) failed to load: {reason}"
    return sorted(set(LOSSES) - before)


def registered_for(task: str) -> list[str]:
    """The losses registered out of tree (register()) for `task`: what a track adds to its DEFAULTS."""
    return [m for m, e in LOSSES.items() if m not in BUILTIN and task in e.tasks]


def preference_methods() -> tuple[str, ...]:
    """The methods that are a function of the margin h (their gradient weight is known), plugins
    registered so far included."""
    return tuple(m for m, spec in LOSSES.items() if spec.weight is not None)


def method(name: str) -> Method:
    """The registry entry for `name`, or a one-line error listing the methods (and, when a plugin
    failed to load, why)."""
    if name not in LOSSES:
        failed = "; ".join(FAILED_PLUGINS.values())
        raise ValueError(
            f"unknown method {name!r}; use one of {', '.join(LOSSES)}" + (f" ({failed})" if failed else "")
        )
    return LOSSES[name]


def gradient_weight(name: str, h: torch.Tensor, beta: float, **options: float) -> torch.Tensor:
    """-dL/dh per sample for a preference method (see Method.weight); `options` are the loss's own
    (cDPO's label_smoothing), as TrainConfig passes them to the loss."""
    entry = method(name)
    if entry.weight is None:
        raise ValueError(f"{name} is not a function of the margin h; use one of {', '.join(preference_methods())}")
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise ValueError(
            f"{name} takes no option {', '.join(unknown)} (its options: {', '.join(entry.options) or 'none'})"
        )
    return entry.weight(h, beta, **options)


def per_pair_loss(name: str, entry: Method, *args, **options) -> torch.Tensor:
    """entry.loss(*args), checked as a registered loss must be: a tensor of one loss per pair (N,),
    with a gradient where its inputs have one. Anything else is one ValueError naming the loss."""
    n = len(args[2])  # y_w
    if name in BUILTIN:
        out = entry.loss(*args, **options)
    else:  # a plugin's own failure is one line that names it; ours keep their traceback
        try:
            out = entry.loss(*args, **options)
        except TypeError as e:  # a signature that is not (logp, ref_logp, y_w, y_l, beta, z0)
            raise ValueError(f"the loss {name!r} must take (logp, ref_logp, y_w, y_l, beta, z0): {e}") from None
        except Exception as e:
            raise ValueError(f"the loss {name!r} raised {type(e).__name__}: {e}") from None
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"the loss {name!r} must return a tensor of one loss per pair ({n},), not {type(out).__name__}"
        )
    if tuple(out.shape) != (n,):
        raise ValueError(
            f"the loss {name!r} must return one loss per pair, shape ({n},); it returned {tuple(out.shape)}"
        )
    if args[0].requires_grad and not out.requires_grad:
        raise ValueError(
            f"the loss {name!r} has no gradient with respect to W (a constant, or detached): it cannot train"
        )
    return out
