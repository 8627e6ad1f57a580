"""Convolutions on a manifold: :class:`ManifoldConv1d`, ``2d`` and ``3d``."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..topology import Manifold, _checks
from .conditioning import Windows
from .linear_op import ManifoldOp

__all__ = ["FLOP_FORMULAS", "ManifoldConv1d", "ManifoldConv2d", "ManifoldConv3d"]

_PLAIN = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_FUNC = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _mix_rows_flop(rows_shape: Any, index_shape: Any, _offsets: Any = None,
                   _scale_grad_by_freq: Any = False, _mode: Any = 0, _sparse: Any = False,
                   per_sample_weights: Any = None, *args: Any, out_shape: Any = None,
                   **kwargs: Any) -> int:
    """FLOPs of an ``embedding_bag``: for each value of each row read, a multiply-add
    when the rows are weighted (``per_sample_weights``, the per-example path's mixing),
    else one add (``sum``, ``mean``) or comparison (``max``), as a user's
    :class:`~torch.nn.EmbeddingBag` does (frozen or not; entries at ``padding_idx``
    count too)."""
    per_value = 2 if per_sample_weights is not None else 1
    return per_value * math.prod(index_shape) * math.prod(rows_shape[1:])


def _conv_backward_flop(grad_out_shape: Any, x_shape: Any, w_shape: Any, _bias: Any,
                        _stride: Any, _padding: Any, _dilation: Any, transposed: bool,
                        _output_padding: Any, _groups: int, output_mask: Any, *args: Any,
                        out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of a convolution's backward pass, groups counted: each gradient asked for
    (input, weight) costs what the forward pass does. (torch 2.13's own formula takes
    the weight gradient of a grouped convolution as ``groups`` times too large.)"""
    forward = 2 * math.prod(x_shape if transposed else grad_out_shape) * math.prod(w_shape[1:])
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


#: FLOP formulas for ``FlopCounterMode(custom_mapping=FLOP_FORMULAS)``, for the ops on the
#: layers' paths that torch's counter does not know or miscounts: the per-example path's
#: kernel mixing (its backward is element-wise work, which the counter never counts) and
#: the backward pass of its grouped convolution
FLOP_FORMULAS: dict[Any, Any] = {torch.ops.aten._embedding_bag: _mix_rows_flop,
                                 torch.ops.aten._embedding_bag_forward_only: _mix_rows_flop,
                                 torch.ops.aten.convolution_backward: _conv_backward_flop}


class _MixRows(torch.autograd.Function):
    r"""Rows mixed per example: :math:`K_i = \sum_{o < w} c_{io} W_{j_{io}}` for ``index``
    ``j`` ``[B, w]``, ``coef`` ``c`` ``[B, w]`` and rows ``W`` ``[n, m]``.

    The forward pass is one ``embedding_bag`` (no ``[B, w, m]`` intermediate kept);
    the backward pass scatters :math:`c_{io} \partial K_i` into row :math:`j_{io}` and
    takes :math:`\langle \partial K_i, W_{j_{io}} \rangle` for the coefficients, ``w``
    passes over ``[B, m]`` each, in differentiable operations: gradients of gradients
    work (``embedding_bag``'s own backward has no derivative for its weights).
    """

    @staticmethod
    def forward(ctx: Any, index: Tensor, coef: Tensor, rows: Tensor) -> Tensor:
        ctx.save_for_backward(index, coef, rows)
        return F.embedding_bag(index, rows, per_sample_weights=coef, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor | None, Tensor | None]:
        index, coef, rows = ctx.saved_tensors
        grad_coef = grad_rows = None
        if ctx.needs_input_grad[1]:
            grad_coef = torch.stack([(grad * rows.index_select(0, index[:, o])).sum(1)
                                     for o in range(index.shape[1])], dim=1)
        if ctx.needs_input_grad[2]:
            grad_rows = torch.zeros_like(rows)
            for o in range(index.shape[1]):
                grad_rows = grad_rows.index_add(0, index[:, o], grad * coef[:, o, None])
        return None, grad_coef, grad_rows


class _ManifoldConvNd(ManifoldOp):
    """``nn.ConvNd`` whose kernel and bias move on a manifold.

    .. math:: y_i = W(s_i) \\star x_i + b(s_i), \\qquad W(s) = \\sum_k a_k(s) W_k

    Every option of ``nn.ConvNd`` is supported: stride, padding (numbers,
    ``"same"``, ``"valid"``), padding modes (``zeros``, ``reflect``,
    ``replicate``, ``circular``), dilation, groups and bias. Parameters:
    ``weight`` ``[n, out, in / groups, *kernel]``, ``bias`` ``[n, out]``.
    """

    _dims: int

    def __init__(self, manifold: Manifold, in_channels: int, out_channels: int,
                 kernel_size: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(manifold)
        plain = _PLAIN[self._dims](in_channels, out_channels, kernel_size, stride, padding,
                                   dilation, groups, bias, padding_mode, device=device,
                                   dtype=dtype)
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "dilation", "groups", "padding_mode", "_reversed_padding_repeated_twice"):
            setattr(self, name, getattr(plain, name))
        n = manifold.n
        self.register_manifold_parameter(
            "weight", nn.Parameter(torch.stack([plain.weight.detach()] * n)))
        if bias:
            self.register_manifold_parameter(
                "bias", nn.Parameter(torch.stack([plain.bias.detach()] * n)))
        else:
            self.register_parameter("bias", None)

    def _apply(self, fn: Any, recurse: bool = True) -> _ManifoldConvNd:  # type: ignore[override]
        """Apply ``fn`` to the basis as to the ``n · out`` kernels it holds.

        ``Module.to(memory_format=torch.channels_last)`` converts 4-D tensors
        (``channels_last_3d``: 5-D); the basis of a 2-D convolution is 5-D,
        ``[n, out, in, kh, kw]``. Seen as ``[n · out, in, kh, kw]`` every basis
        kernel gets the layout asked for, and device and dtype moves are
        unchanged.
        """
        basis_dims = self._dims + 3

        def per_kernel(t: Tensor) -> Tensor:
            if t.dim() == basis_dims:
                return fn(t.flatten(0, 1)).unflatten(0, t.shape[:2])
            return fn(t)

        return super()._apply(per_kernel, recurse)

    def _like_input(self, y: Tensor, x: Tensor) -> Tensor:
        """``y`` in the memory format of ``x`` (channels-last in, channels-last out)."""
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
        if fmt is not None and not x.is_contiguous() and x.is_contiguous(memory_format=fmt):
            return y.contiguous(memory_format=fmt)
        return y

    def _pad(self, x: Tensor) -> tuple[Tensor, Any]:
        if self.padding_mode != "zeros":
            return F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0
        return x, self.padding

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None, groups: int) -> Tensor:
        x, padding = self._pad(x)
        return _FUNC[self._dims](x, weight, bias, self.stride, padding, self.dilation, groups)

    def _plain(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return self._conv(x, weight, bias, self.groups)

    def _check_batched(self, x: Tensor, bd: int) -> None:
        if bd != 0:
            raise ValueError(f"{type(self).__name__} takes its batch along dim 0, not {bd}")
        if x.ndim != self._dims + 2:
            raise ValueError(
                f"{type(self).__name__} with per-example conditions needs a batched input "
                f"of {self._dims + 2} dims, got shape {list(x.shape)}")

    def _basis_op(self, x: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor,
                  bd: int) -> Tensor:
        self._check_batched(x, bd)
        n, g = weight.shape[0], self.groups
        cout, cin_g = self.out_channels, self.in_channels // g
        kernel = weight.shape[3:]
        w = weight.reshape(n, g, cout // g, cin_g, *kernel)
        b = x.shape[0]
        spatial_in = math.prod(x.shape[2:])
        # take the path whose n×-wide intermediate tensor is smaller
        if self._mix_inputs(
                self.in_channels * spatial_in <= cout * math.prod(self._out_spatial(x.shape[2:]))):
            y = self._input_mixed(x, weight, a)
        else:
            wstack = w.permute(1, 0, 2, 3, *range(4, 4 + self._dims)).reshape(
                g * n * (cout // g), cin_g, *kernel)
            y = self._conv(x, wstack, None, g)
            sp = y.shape[2:]
            y = y.reshape(b, g, n, cout // g, *sp)
            y = torch.einsum("bgnc...,bn->bgc...", y, a).reshape(b, cout, *sp)
        if bias is not None:
            y = y + (a @ bias).reshape(b, cout, *([1] * self._dims))
        return self._like_input(y, x)

    #: a small convolution's backward pass costs about 0.2–0.3 ms on two CPU cores
    #: whatever its batch (bench/README.md): fewer, wider calls win on small layers
    _CALL_COST = 1.5e7
    _kernel_per_example = True

    def _example_forward(self, x: Tensor, windows: Windows | None, a: Tensor,
                         bd: int) -> Tensor:
        r"""One grouped convolution over the batch, each example against its own kernel
        (``B · groups`` groups), the kernels mixed from each example's window
        (:class:`_MixRows`: its backward scatters into the ``w`` basis tensors only).

        .. math:: y_i = \Big(\sum_{o < w} c_{io} W_{j_i + o}\Big) \star x_i
            + \sum_{o < w} c_{io}\, b_{j_i + o}, \qquad c_{io} = a_{j_i + o}(s_i)
        """
        self._check_batched(x, bd)
        b, n, g = x.shape[0], self.manifold.n, self.groups
        dtype = self.weight.dtype
        bias = None
        if windows is not None and windows.index is not None and not _checks.transformed():
            # (_MixRows has no functorch rule: under torch.func the dense product below)
            coef = windows.local.to(dtype)
            kernels = _MixRows.apply(windows.index, coef, self.weight.reshape(n, -1))
            if self.bias is not None:
                bias = _MixRows.apply(windows.index, coef, self.bias)
        else:  # every coefficient may be non-zero: one product, traceable
            a = a.to(dtype)
            kernels = a @ self.weight.reshape(n, -1)
            if self.bias is not None:
                bias = a @ self.bias
        kernels = kernels.reshape(b * self.out_channels, self.in_channels // g,
                                  *self.weight.shape[3:])
        y = self._conv(x.reshape(1, b * self.in_channels, *x.shape[2:]), kernels, None, b * g)
        y = y.reshape(b, self.out_channels, *y.shape[2:])
        if bias is not None:
            y = y + bias.reshape(b, self.out_channels, *([1] * self._dims))
        return self._like_input(y, x)

    def _work_per_example(self, x: Tensor, bd: int) -> float:
        return math.prod(self._out_spatial(x.shape[2:])) * self.weight[0].numel()

    def _input_mixed(self, x: Tensor, basis: Tensor, a: Tensor) -> Tensor:
        r""":math:`\sum_k W_k \star (a_k(s_i) x_i)`: one convolution of the inputs scaled by
        ``a`` and stacked along the channels of each group, against the basis ``[m, out,
        in / groups, *kernel]`` concatenated along its input axis."""
        m, g = basis.shape[0], self.groups
        cout, cin_g = self.out_channels, self.in_channels // g
        kernel = basis.shape[3:]
        b, sp = x.shape[0], x.shape[2:]
        xa = x.reshape(b, g, 1, cin_g, *sp) * a.reshape(b, 1, m, *([1] * (1 + len(sp))))
        xa = xa.reshape(b, g * m * cin_g, *sp)
        w = basis.reshape(m, g, cout // g, cin_g, *kernel)
        wcat = w.permute(1, 2, 0, 3, *range(4, 4 + self._dims)).reshape(
            cout, m * cin_g, *kernel)
        return self._conv(xa, wcat, None, g)

    def _out_spatial(self, sizes: torch.Size) -> list[int]:
        d = self._dims
        if self.padding == "same":
            return list(sizes)
        if self.padding_mode != "zeros":
            pads = self._reversed_padding_repeated_twice
            total = [pads[2 * (d - 1 - i)] + pads[2 * (d - 1 - i) + 1] for i in range(d)]
        else:
            total = [0] * d if self.padding == "valid" else [2 * p for p in self.padding]
        return [
            (size + t - dil * (k - 1) - 1) // st + 1
            for size, t, dil, k, st in zip(sizes, total, self.dilation, self.kernel_size,
                                           self.stride)
        ]

    def _make_plain(self) -> nn.Module:
        return _PLAIN[self._dims](self.in_channels, self.out_channels, self.kernel_size,
                                  self.stride, self.padding, self.dilation, self.groups,
                                  self.bias is not None, self.padding_mode,
                                  device=self.weight.device, dtype=self.weight.dtype)

    @classmethod
    def from_plain(cls, module: nn.Module, manifold: Manifold) -> _ManifoldConvNd:
        """A manifold conv with the configuration of ``module`` (weights set by the caller)."""
        return cls(manifold, module.in_channels, module.out_channels, module.kernel_size,
                   module.stride, module.padding, module.dilation, module.groups,
                   module.bias is not None, module.padding_mode, device=module.weight.device,
                   dtype=module.weight.dtype)

    def extra_repr(self) -> str:
        s = (f"{self.manifold!r}, {self.in_channels}, {self.out_channels}, "
             f"kernel_size={self.kernel_size}, stride={self.stride}")
        if self.padding != (0,) * self._dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s


class ManifoldConv1d(_ManifoldConvNd):
    """``nn.Conv1d`` on a manifold; see :class:`_ManifoldConvNd` for the math and options.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> conv = wm.ManifoldConv1d(wm.Line(), 3, 5, 3, padding=1)
        >>> conv(torch.randn(4, 3, 10), torch.rand(4)).shape
        torch.Size([4, 5, 10])
    """

    _dims = 1


class ManifoldConv2d(_ManifoldConvNd):
    """``nn.Conv2d`` on a manifold; see :class:`_ManifoldConvNd` for the math and options.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> conv = wm.ManifoldConv2d(wm.Ellipse(), 3, 8, 3, padding="same")
        >>> conv(torch.randn(4, 3, 12, 12), torch.rand(4)).shape
        torch.Size([4, 8, 12, 12])
    """

    _dims = 2


class ManifoldConv3d(_ManifoldConvNd):
    """``nn.Conv3d`` on a manifold; see :class:`_ManifoldConvNd` for the math and options.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> conv = wm.ManifoldConv3d(wm.Line(), 2, 4, 3)
        >>> conv(torch.randn(2, 2, 5, 5, 5), torch.rand(2)).shape
        torch.Size([2, 4, 3, 3, 3])
    """

    _dims = 3
