"""The optimizer and gradient clipping of the training loop.

AdamW without decay on biases and LayerNorms, fused into one kernel. On BERT-Tiny the word
embedding table is 3.9M of 4.4M parameters, and a batch uses a few hundred of its rows; its
dense gradient is a full table to zero-fill, clip and scale at every step, which on CPU costs
more memory traffic than the rest of the model. With a sparse gradient (`use_sparse_embedding_gradient`)
clipping touches only the used rows, and AdamW either takes the same dense step from a kept
buffer the rows are scattered into (exact), or, `lazy`, updates only the rows a batch used
(as TensorFlow's LazyAdam and torch's SparseAdam do).
"""

from __future__ import annotations

import torch


class SparseRowsAdamW(torch.optim.AdamW):
    """AdamW that also takes row-sparse gradients. Not `lazy`: the exact dense AdamW step, the
    gradient's rows written into a zero buffer kept for the purpose (and zeroed again after).
    `lazy`: only the rows the gradient holds move, whose moments alone decay (the other rows
    keep their weights and moments)."""

    def __init__(self, params, lazy: bool = False, **kwargs):
        super().__init__(params, **kwargs)
        self.lazy = lazy
        self._dense_grads: dict[torch.Tensor, torch.Tensor] = {}  # not state: zeros between steps

    def step(self, closure=None):
        sparse = [(param, group, param.grad.coalesce()) for group in self.param_groups for param in group["params"]
                  if param.grad is not None and param.grad.is_sparse]
        for param, _, grad in sparse:  # lazy: AdamW's own step skips it
            param.grad = None if self.lazy else self._scatter(param, grad)
        loss = super().step(closure)
        for param, group, grad in sparse:
            if self.lazy:
                self._lazy_step(param, group, grad)
            else:
                param.grad.index_fill_(0, grad.indices()[0], 0.0)
            param.grad = grad
        return loss

    @torch.no_grad()
    def _scatter(self, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        dense = self._dense_grads.get(param)
        if dense is None:
            dense = self._dense_grads[param] = torch.zeros_like(param)
        return dense.index_copy_(0, grad.indices()[0], grad.values())

    @torch.no_grad()
    def _lazy_step(self, param: torch.Tensor, group: dict, grad: torch.Tensor) -> None:
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        state["step"] += 1
        step, (beta1, beta2), lr = float(state["step"]), group["betas"], float(group["lr"])
        rows, values = grad.indices()[0], grad.values()
        exp_avg = state["exp_avg"][rows].mul_(beta1).add_(values, alpha=1 - beta1)
        exp_avg_sq = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
        denom = exp_avg_sq.div_(1 - beta2 ** step).sqrt_().add_(group["eps"])
        weights = param[rows].mul_(1 - lr * group["weight_decay"])
        param.index_copy_(0, rows, weights.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1 ** step)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, fused: bool = True,
                   lazy: bool = False) -> torch.optim.Optimizer:
    """AdamW without decay on biases and LayerNorms; `fused`: one kernel for all dense tensors
    (CPU and GPU), several times faster than the per-tensor loop on a small model; `lazy`: a
    sparse gradient moves only its own rows (SparseRowsAdamW)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return SparseRowsAdamW(groups, lazy=lazy, lr=lr, fused=fused, foreach=None if fused else False)


def use_sparse_embedding_gradient(model: torch.nn.Module, enabled: bool = True) -> None:
    """Give the word embedding table of `model` a sparse gradient (or, not `enabled`, a dense one)."""
    model.get_input_embeddings().sparse = enabled


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ that also takes sparse gradients (it does not): the same
    global L2 norm, and every gradient scaled by min(1, max_norm / norm)."""
    params = [p for p in parameters if p.grad is not None]
    for param in params:
        if param.grad.is_sparse:
            param.grad = param.grad.coalesce()  # repeated rows summed before the norm
    dense = [p for p in params if not p.grad.is_sparse]
    sparse = [p for p in params if p.grad.is_sparse]
    norms = [torch.nn.utils.get_total_norm([p.grad for p in dense])] + [p.grad.values().norm() for p in sparse]
    total = torch.linalg.vector_norm(torch.stack(norms))
    torch.nn.utils.clip_grads_with_norm_(dense, max_norm, total)
    for param in sparse:
        param.grad.mul_((max_norm / (total + 1e-6)).clamp(max=1.0))
    return total
