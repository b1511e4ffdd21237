"""What students read for the lesson 11 exercises (quantization and head pruning). Same rules as
texts_model.py: no final formula in the task, the steps or hint levels 1-2."""

from minibert.classroom.text import Text

TEXTS = {
    "quantize": Text(
        task="return the int8 levels q and the float32 scale(s) of symmetric b-bit quantization of w.",
        steps=("`reduce` names the axes one scale covers: what is the largest |w| over them, kept "
               "as size-1 axes so that it broadcasts against w?",
               "Which value of a slice must land exactly on the top level, and what is the top "
               "level for `bits` bits?",
               "How do you turn w / scale into a level: truncate, floor or round?",
               "What stops a level leaving the symmetric range, and what scale does an all-zero "
               "slice get?"),
        hints=("Lesson 11, section 1: symmetric means no zero point, levels -qmax..qmax, and the "
               "scale is one step of the grid. Keep the reduced axes (keepdims) so scale broadcasts.",
               "amax = the largest |w| over the reduced axes; the step is amax divided by the top "
               "level; levels are w / step rounded to the nearest integer and clipped.",
               "scale = amax / (2^(bits-1) - 1) (1 where amax is 0); q = clip(rint(w / scale), "
               "-top, top), returned as int8."),
        answers=("np.rint(w32/scale)", "amax/top")),
    "dequantize": Text(
        task="return the float weights that the levels q and their scale(s) stand for, in `dtype`.",
        steps=("What does one level mean, given the scale?",
               "int8 holds -128..127: in which dtype must the multiplication happen?",
               "Does scale need reshaping, or does its shape already broadcast against q?"),
        hints=("Lesson 11, section 1: quantize divided by the scale and rounded; dequantize undoes "
               "the division (the rounding cannot be undone).",
               "Cast both q and scale to `dtype` first, then one elementwise product; (1, M), (D, 1) "
               "and (1, 1) all broadcast against (D, M).",
               "return q.astype(dtype) times scale.astype(dtype)."),
        answers=("q.astype(dtype)*scale.astype(dtype)",)),
    "head_gate_backward": Text(
        task="return dctx and dgates for out = ctx with each head's hs columns multiplied by its gate.",
        steps=("ctx is (B,T,A) with A = nh*hs: how do you view it so that each head is one axis?",
               "out_h = g_h * ctx_h: what is d out_h / d ctx_h?",
               "Which axes does dL/dg_h add up over, and which axis stays?"),
        hints=("Lesson 11, section 4: the gate is a scalar per head, so its gradient adds up every "
               "place that scalar multiplied something.",
               "Reshape dout and ctx to (B,T,nh,hs); dctx is dout times the gate of its head; the "
               "gate's gradient sums dout * ctx over B, T and hs.",
               "dctx = (dout4 * gates[:, None]).reshape(B,T,A); dgates = einsum('btnd,btnd->n', "
               "dout4, ctx4)."),
        answers=("d4*gates[:,None]", "btnd,btnd->n")),
}
