"""TARE's learned reward and its outer step: ``r_phi`` on experience, the parameterised
advantages (eqs. 11-12), the objectives of the implicit hypergradient (eqs. 13-14), the
hypergradient itself (:func:`metareward.meta.implicit_hypergrad`, CG on Hessian-vector
products) and the reward's Adam step (Algorithm 1, lines 8-10).

"Taming Reward: learning parameterised rewards for policy gradient by implicit
differentiation", Appendix B and Appendix F.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from metareward.algos.awr import freeze_std
from metareward.algos.tare.core import Metrics, Params, Parts, Segment, policy_params
from metareward.meta import implicit_hypergrad
from metareward.meta.solvers import CGInfo
from metareward.nets.distributions import kl_divergence
from metareward.rl.gae import discounted_cumsum
from metareward.rl.grads import clip_by_global_norm
from metareward.rl.losses import awr_policy_loss, awr_weights
from metareward.rl.stats import masked_mean_std, standardize

Index = tuple[jax.Array, jax.Array]
Objective = Callable[[jax.Array, jax.Array], Any]


def learned_reward(parts: Parts, reward_params: Params, seg: Segment) -> jax.Array:
    """``r_phi`` on a time-major segment (Appendix F: the reward net reads ``(s_t, a_t,
    r_t, t)``, its LSTMs reset at episode boundaries).

    Args:
      parts: The static parts (``parts.reward_net``).
      reward_params: ``phi`` as a parameter tree.
      seg: The experience ``[T, n]``.

    Returns:
      ``r_phi [T, n]``.
    """
    return parts.reward_net.apply(reward_params, seg.obs, seg.action, seg.r_in, seg.t_in,
                                  seg.done)


def param_advantage(parts: Parts, phi: jax.Array, seg: Segment
                    ) -> tuple[jax.Array, jax.Array]:
    """The parameterised advantage ``A_phi`` (eq. 11: the discounted sum of parameterised
    rewards minus ``V``, GAE with ``param_gae_lambda``; eq. 12: TD(lambda)) and ``V``'s
    targets, differentiable in ``phi``: a linear map (:func:`discounted_cumsum`) of the
    reward ``r_in_coef r_phi + r_ex_coef r_ex``.

    Args:
      parts: The static parts.
      phi: The flat reward parameters.
      seg: The experience ``[T, n]``.

    Returns:
      ``(advantages, value targets)``, each ``[T, n]``.
    """
    c = parts.config
    r_phi = learned_reward(parts, parts.unravel["reward"](phi)["reward"], seg)
    r = c.r_in_coef * r_phi + c.r_ex_coef * seg.r_ex
    adv = discounted_cumsum(r + seg.td_v, seg.lam_disc)
    return adv, adv + seg.v


def eq11_loss(log_prob: jax.Array, old_log_prob: jax.Array, adv: jax.Array,
              entropy: jax.Array, kl_coef: float, ent_coef: float
              ) -> tuple[jax.Array, Metrics]:
    """TARE eq. 11 (Appendix B), minimised: ``-E[rho A] + kl_coef E[KL(pi_old || pi)] -
    ent_coef E[H]``, ``rho = pi(a|s) / pi_old(a|s)``, the KL estimated on the taken
    actions (``E[log pi_old(a|s) - log pi(a|s)]``). Smooth, unlike PPO's clipped
    surrogate; its KL term puts the Fisher information into its Hessian.

    Args:
      log_prob: ``log pi(a|s)`` per sample.
      old_log_prob: ``log pi_old(a|s)`` per sample.
      adv: advantages per sample (used as given).
      entropy: ``H(pi(.|s))`` per sample.
      kl_coef: the KL penalty's weight.
      ent_coef: the entropy bonus's weight.

    Returns:
      ``(loss, {"surrogate": E[rho A], "kl": the KL estimate})``.
    """
    log_ratio = log_prob - old_log_prob
    surrogate = jnp.mean(jnp.exp(log_ratio) * adv)
    kl = -jnp.mean(log_ratio)
    loss = -surrogate + kl_coef * kl - ent_coef * jnp.mean(entropy)
    return loss, {"surrogate": surrogate, "kl": kl}


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape((-1, *x.shape[2:]))


def valid_mean_std(x: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and std of ``x [L, n]`` over the rows where ``valid [L]``.

    Args:
      x: The values ``[L, n]``.
      valid: The mask of valid rows ``[L]``.

    Returns:
      ``(mean, std)``, scalars.
    """
    return masked_mean_std(x, jnp.broadcast_to(valid[:, None], x.shape))


def policy_dist(parts: Parts, pol_params: Params, obs: jax.Array) -> Any:
    """The policy's distribution at ``obs``; AWR's Gaussian std is fixed (no gradient)
    unless ``learn_std`` (:func:`metareward.algos.awr.freeze_std`).

    Args:
      parts: The static parts.
      pol_params: The policy net's parameters (a tree, :func:`policy_params`).
      obs: Normalised observations ``[..., obs_size]``.

    Returns:
      The action distribution.
    """
    if not parts.is_ppo:
        pol_params = freeze_std(parts, pol_params)
    return parts.policy.apply(pol_params, obs)


def ppo_objective(parts: Parts, pol: jax.Array, seg: Segment, adv: jax.Array,
                  kl_coef: float, ent_coef: float) -> tuple[jax.Array, Metrics]:
    """Eq. 11 (with ``kl_coef = ent_coef = 0``: eq. 3's surrogate) of the flat policy
    ``pol`` on a whole segment, minimised (:func:`eq11_loss`); the advantages ``[T, n]``
    standardised over the set if ``normalize_advantages``.

    Args:
      parts: The static parts.
      pol: The flat policy parameters.
      seg: The experience ``[T, n]`` (with the behaviour policy's ``log_prob``).
      adv: The advantages ``[T, n]``.
      kl_coef: Eq. 11's KL weight.
      ent_coef: Eq. 11's entropy weight.

    Returns:
      ``(loss, metrics)`` of :func:`eq11_loss`.
    """
    dist = parts.policy.apply(policy_params(parts, pol), _flat(seg.obs))
    adv = _flat(adv)
    if parts.config.normalize_advantages:
        adv = standardize(adv)
    logp = dist.log_prob(_flat(seg.action))
    return eq11_loss(logp, _flat(seg.log_prob), adv, dist.entropy(), kl_coef, ent_coef)


def awr_objective(parts: Parts, pol: jax.Array, seg: Segment, adv: jax.Array, idx: Index,
                  valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """AWR's weighted log-likelihood (eqs. 4, 12) of the flat policy ``pol`` on the
    entries ``idx = (t, e)`` of ``seg``, minimised; the advantages ``adv [T, n]`` are
    first normalised over the ``valid`` rows (as the AWR code) and exponentiated,
    clipped.

    Args:
      parts: The static parts.
      pol: The flat policy parameters.
      seg: The experience ``[T, n]``.
      adv: The advantages ``[T, n]``.
      idx: ``(t, e)``: the entries' row and column indices, ``[m]`` each.
      valid: The mask of valid rows ``[T]``.

    Returns:
      ``(loss, weights)``: the scalar loss and the entries' weights ``[m]``.
    """
    c = parts.config
    if c.normalize_advantages:
        mean, std = valid_mean_std(adv, valid)
        adv = (adv - mean) / (std + 1e-5)
    t, e = idx
    w = awr_weights(adv[t, e], c.temperature, c.weight_clip)
    dist = policy_dist(parts, policy_params(parts, pol), seg.obs[t, e])
    return awr_policy_loss(dist.log_prob(seg.action[t, e]), w), w


def fisher_objective(parts: Parts, pol: jax.Array, seg: Segment, weight: jax.Array | float,
                     idx: Index | None = None) -> jax.Array:
    """``E_s[weight KL(pi_sg(.|s) || pi(.|s))]`` with ``pi_sg`` the same policy under
    ``stop_gradient``: its Hessian at ``pol`` is the (weighted) Fisher information, the
    Gauss-Newton matrix of the policy's log-likelihood (positive semi-definite).

    Args:
      parts: The static parts.
      pol: The flat policy parameters.
      seg: The experience ``[T, n]``.
      weight: A scalar, or per-entry weights ``[m]`` (with ``idx``).
      idx: ``(t, e)``: entries of ``seg``, ``[m]`` each (``None``: every entry).

    Returns:
      The scalar objective.
    """
    obs = _flat(seg.obs) if idx is None else seg.obs[idx]
    dist = policy_dist(parts, policy_params(parts, pol), obs)
    fixed = jax.tree.map(jax.lax.stop_gradient, dist)
    return jnp.mean(weight * kl_divergence(fixed, dist))


def _flavour_objectives(parts: Parts, seg_va: Segment, idx_va: Index | None,
                        valid: jax.Array | None) -> tuple[Callable, Callable, Objective]:
    """The inner learner's ``(objective(pol, seg, adv, idx), fisher(pol, seg, adv, idx),
    outer(pol, phi))``: PPO's eq. 11 / AWR's eq. 12 with given advantages, its Fisher
    form, and ``-J_ex`` on the validation set (eq. 13, with aux metrics)."""
    c = parts.config
    if parts.is_ppo:
        def obj(pol, seg, adv, idx):
            return ppo_objective(parts, pol, seg, adv, c.kl_coef, c.ent_coef)[0]

        def fisher(pol, seg, adv, idx):
            return c.kl_coef * fisher_objective(parts, pol, seg, 1.0)

        def outer(pol, phi):
            _, aux = ppo_objective(parts, pol, seg_va, seg_va.adv_ex, 0.0, 0.0)
            return -aux["surrogate"], {"ex_objective": aux["surrogate"],
                                       "val_kl": aux["kl"]}

        return obj, fisher, outer

    def obj(pol, seg, adv, idx):
        return awr_objective(parts, pol, seg, adv, idx, valid)[0]

    def fisher(pol, seg, adv, idx):
        w = jax.lax.stop_gradient(awr_objective(parts, pol, seg, adv, idx, valid)[1])
        return fisher_objective(parts, pol, seg, w, idx)

    def outer(pol, phi):
        loss, w = awr_objective(parts, pol, seg_va, seg_va.adv_ex, idx_va, valid)
        return loss, {"ex_objective": -loss, "ex_weight_mean": jnp.mean(w)}

    return obj, fisher, outer


def objectives(parts: Parts, seg_tr: Segment, seg_va: Segment, idx_tr: Index | None = None,
               idx_va: Index | None = None, valid: jax.Array | None = None,
               phi: jax.Array | None = None) -> tuple[Objective, Objective, Objective]:
    """Eq. 14's three terms as functions of the flat ``(pol, phi)``.

    The curvature is ``-J_phi``'s Hessian on the training set (``hessian="train"``, the
    implicit-function-theorem derivative of Theorem 1) or on the validation set
    (``"validation"``, eq. 14 as printed), or with ``curvature="fisher"`` the Fisher of
    that set (:func:`fisher_objective`: ``kl_coef`` times it for PPO, the advantage
    weights for AWR).

    Args:
      parts: The static parts.
      seg_tr: The training experience.
      seg_va: The validation experience.
      idx_tr: AWR: the ``(t, e)`` entries of the training set the objectives average
        over; PPO: None (the whole segment).
      idx_va: The same for the validation set.
      valid: AWR: ``[T]`` the valid buffer rows (the advantages are normalised over them).
      phi: If given, the curvature's advantages are computed once at ``phi`` (the
        curvature is in the policy's parameters only, so this is exact) and its ``phi``
        argument is ignored: CG's matrix-vector products then do not rerun the reward net.

    Returns:
      ``(inner_loss, hessian_loss, outer_loss)``: ``-J_phi`` on the training set, the
      curvature CG uses, and ``-J_ex`` on the validation set (returning ``(loss, aux)``).
    """
    c = parts.config
    obj, fisher, outer = _flavour_objectives(parts, seg_va, idx_va, valid)

    def param_obj(pol, h, seg, idx):
        return obj(pol, seg, param_advantage(parts, h, seg)[0], idx)

    seg_h, idx_h = (seg_tr, idx_tr) if c.hessian == "train" else (seg_va, idx_va)
    curv = fisher if c.curvature == "fisher" else obj
    if phi is None:
        hess = lambda p, h: curv(p, seg_h, param_advantage(parts, h, seg_h)[0], idx_h)
    else:
        adv_h = jax.lax.stop_gradient(param_advantage(parts, phi, seg_h)[0])
        hess = lambda p, h: curv(p, seg_h, adv_h, idx_h)
    return lambda p, h: param_obj(p, h, seg_tr, idx_tr), hess, outer


def hypergradient(parts: Parts, pol: jax.Array, phi: jax.Array, seg_tr: Segment,
                  seg_va: Segment, idx_tr: Index | None = None, idx_va: Index | None = None,
                  valid: jax.Array | None = None) -> tuple[jax.Array, Metrics, CGInfo]:
    """Eq. 14: the implicit hypergradient of the trained policy's extrinsic objective on
    the validation set with respect to the reward parameters, by
    :func:`metareward.meta.implicit_hypergrad` (the curvature of :func:`objectives`,
    the cross term on the training set, ``cg_steps`` of CG with ``cg_damping`` and
    ``cg_restarts``).

    Args:
      parts: The static parts.
      pol: The trained policy's flat parameters ``theta'``.
      phi: The flat reward parameters.
      seg_tr: As in :func:`objectives`.
      seg_va: As in :func:`objectives`.
      idx_tr: As in :func:`objectives`.
      idx_va: As in :func:`objectives`.
      valid: As in :func:`objectives`.

    Returns:
      ``(d (-J_ex(theta'; val)) / d phi, aux metrics, CGInfo)``.
    """
    c = parts.config
    inner, hess, outer = objectives(parts, seg_tr, seg_va, idx_tr, idx_va, valid, phi)
    return implicit_hypergrad(inner, outer, pol, phi, hessian_loss=hess,
                              maxiter=c.cg_steps, damping=c.cg_damping,
                              restarts=c.cg_restarts, has_aux=True, return_info=True)


def reward_step(parts: Parts, pol: jax.Array, phi: jax.Array, opt_phi: Any, seg_tr: Segment,
                seg_va: Segment, *idx: Any) -> tuple[jax.Array, Any, jax.Array, Metrics]:
    """Algorithm 1, line 9: one Adam step of ``phi`` on the hypergradient (scaled by
    ``hypergrad_coef``, clipped at ``reward_max_grad_norm``; Table 1); a non-finite one
    is skipped.

    Args:
      parts: The static parts.
      pol: The trained policy's flat parameters.
      phi: The flat reward parameters.
      opt_phi: Their Adam state.
      seg_tr: The training experience.
      seg_va: The validation experience.
      *idx: AWR: ``(idx_tr, idx_va, valid)`` (see :func:`objectives`).

    Returns:
      ``(phi, opt_phi, ok, metrics)``.
    """
    c = parts.config
    g, aux, info = hypergradient(parts, pol, phi, seg_tr, seg_va, *idx)
    g, norm, ok = clip_by_global_norm(c.hypergrad_coef * g, c.reward_max_grad_norm)
    ok = ok & jnp.isfinite(aux["ex_objective"])
    upd, new_opt = parts.optimizers["reward"].update(g, opt_phi, phi)
    phi = jnp.where(ok, phi + upd, phi)
    metrics = {**aux, "hypergrad_norm": norm, "cg_residual": info.residual_norm,
               "cg_iterations": info.iterations.astype(jnp.float32),
               "cg_negative_curvature": info.negative_curvature.astype(jnp.float32),
               "cg_min_curvature": info.min_curvature, "cg_damping": info.damping}
    return phi, new_opt, ok, metrics


def reward_update(parts: Parts, pol: jax.Array, phi: jax.Array, opt_phi: Any,
                  seg_tr: Segment, seg_va: Segment, *idx: Any
                  ) -> tuple[jax.Array, Any, jax.Array, Metrics]:
    """``reward_updates`` of :func:`reward_step` on the same data.

    Args:
      parts: The static parts (``reward_updates``).
      pol: The trained policy's flat parameters.
      phi: The flat reward parameters.
      opt_phi: Their Adam state.
      seg_tr: The training experience.
      seg_va: The validation experience.
      *idx: AWR: ``(idx_tr, idx_va, valid)`` (see :func:`objectives`).

    Returns:
      ``(phi, opt_phi, number of skipped steps, mean metrics)``.
    """

    def body(carry, _):
        phi, opt_phi, bad = carry
        phi, opt_phi, ok, m = reward_step(parts, pol, phi, opt_phi, seg_tr, seg_va, *idx)
        return (phi, opt_phi, bad + (~ok)), m

    (phi, opt_phi, bad), m = jax.lax.scan(body, (phi, opt_phi, jnp.int32(0)), None,
                                          length=parts.config.reward_updates)
    return phi, opt_phi, bad, jax.tree.map(jnp.mean, m)


__all__ = ["awr_objective", "eq11_loss", "fisher_objective", "hypergradient",
           "learned_reward", "objectives", "param_advantage", "policy_dist", "ppo_objective",
           "reward_step", "reward_update", "valid_mean_std"]
