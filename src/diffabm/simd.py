"""Eight float32 lanes at once: loads, adds and stores of LLVM vectors (`<8 x float>`) from compiled loops.

LLVM's superword-level parallelism pass leaves a row of B draws added to an accumulator as B scalar adds (it does not
vectorise accumulators carried across a loop); these intrinsics emit the vector operations directly, which the
backend lowers to the target's widest registers (two SSE or one AVX register per eight lanes). Each lane is the same
IEEE float32 operation as the scalar code, so results are bit for bit those of a scalar loop (Numba intrinsics:
Lam, Pitrou & Seibert 2015; LLVM vector types: the LLVM Language Reference, "Vector Type").
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 8
_VECTOR = ir.VectorType(ir.FloatType(), LANES)


def _lanes_pointer(context, builder, array_type, array, row, row_type, offset, offset_type):
    """A `<8 x float>*` at array[row, offset] (float32, C-contiguous rows)."""
    values = context.make_array(array_type)(context, builder, array)
    index = [context.cast(builder, row, row_type, types.intp)]
    index += [context.get_constant(types.intp, 0)] * (array_type.ndim - 1)
    first = cgutils.get_item_pointer(context, builder, array_type, values, index, wraparound=False)
    at = builder.gep(first, [context.cast(builder, offset, offset_type, types.intp)])
    return builder.bitcast(at, _VECTOR.as_pointer())


def _lanes_intrinsic(combine):
    def typer(typingctx, target, target_row, source, source_row, offset):
        rows = (target, source)
        if not all(isinstance(a, types.Array) and a.dtype == types.float32 and a.layout == "C" for a in rows):
            return None  # float32 and C-contiguous only, as the lanes are read as <8 x float>: a typing error otherwise
        signature = types.void(target, target_row, source, source_row, offset)

        def codegen(context, builder, sig, args):
            kinds = sig.args
            out = _lanes_pointer(context, builder, kinds[0], args[0], args[1], kinds[1], args[4], kinds[4])
            into = _lanes_pointer(context, builder, kinds[2], args[2], args[3], kinds[3], args[4], kinds[4])
            loaded = builder.load(into, align=4)
            stored = builder.store(combine(builder, out, loaded), out)
            stored.align = 4
            return context.get_dummy_value()

        return signature, codegen

    return intrinsic(typer)


copy_lanes = _lanes_intrinsic(lambda builder, out, loaded: loaded)
copy_lanes.__doc__ = "target[target_row, offset : offset + 8] = source[source_row, offset : offset + 8]"
add_lanes = _lanes_intrinsic(lambda builder, out, loaded: builder.fadd(builder.load(out, align=4), loaded))
add_lanes.__doc__ = "target[target_row, offset : offset + 8] += source[source_row, offset : offset + 8]"
