"""What students read for the lesson 1-6 exercises: the task, the numbered questions written
into each stub, three levels of hints, and a stub docstring where the library's own docstring
states the result. Level 1 points at the idea, level 2 at the intermediate quantities, level 3
comes close to the answer. None of the task, the steps or levels 1-2 may state a final
formula (tests/test_exercises.py checks each `answers` fragment against all of them)."""

from minibert.classroom.text import Text

TEXTS = {
    "rel_error": Text(
        task="return the largest relative error between two arrays, as a Python float.",
        steps=("Which array of per-entry errors do you compare: the difference against what size?",
               "What should the denominator be when both entries are 0, or 1e-20 (what is `floor` for)?",
               "Which single number summarises the whole array: the mean or the worst entry, and why?",
               "What do two empty arrays return?"),
        hints=("A relative error divides a difference by a size. Read lesson 1, section 3: why is "
               "|a| + |b| a better size than |a + b| when a = -b?",
               "Compute an array of per-entry errors, keep its largest, and return it as a Python "
               "float; an empty input has no entries to be wrong.",
               "error per entry = |a - b| / max(floor, |a| + |b|); return float of its max "
               "(0.0 for empty arrays)."),
        answers=("np.maximum(floor,np.abs(a)+np.abs(b))",)),
    "numerical_vjp": Text(
        task="fill grad[n] with the centred-difference estimate for entry which[n] of x.",
        steps=("For entry i of the flat view, which two inputs do you evaluate f at?",
               "f may return a view of x: what must you do with its output before the next nudge?",
               "How do you turn the two outputs and dout into one number (there is a helper for "
               "tuples of outputs)?",
               "What do you divide by, and what must x look like when you are done?"),
        hints=("Lesson 1, section 2: a centred difference nudges the input both ways. The error of "
               "the one-sided version is O(h); of the centred one O(h^2).",
               "For each i: save the old value, set it to old + h, evaluate (copy!), set it to "
               "old - h, evaluate (copy!), restore old, combine the two with "
               "_projected_difference(plus, minus, dout).",
               "grad[n] = _projected_difference(_copy(f(x at +h)), _copy(f(x at -h)), dout) / (2h), "
               "then flat[i] = old."),
        answers=("/(2*h)",)),
    "linear_backward": Text(
        task="return dx, dW and db for y = x @ W + b, where x may have any number of leading axes.",
        steps=("x is (N..., D): how can you treat all the leading axes as one axis of rows?",
               "y_nm = sum_d x_nd W_dm + b_m: which entries of dy does b_m touch, and how do they add up?",
               "Which product of two matrices has the shape of W, (D, M), and sums over the rows?",
               "Which product has the shape of x, and how do you give it x's original shape back?"),
        hints=("Lesson 1, section 1: write y_nm for one row and differentiate it by each of x_nd, "
               "W_dm and b_m. Every row n contributes to dW and db.",
               "Flatten x to (N, D) and dy to (N, M). Each gradient is a matmul or a sum of dy with "
               "one of the cached tensors; the shapes leave only one way to write each.",
               "dx = dy2 @ W.T (reshaped like x), dW = x2.T @ dy2, db = dy2.sum(axis=0)."),
        answers=("dy2@W.T", "x2.T@dy2", "dy@W.T", "x.T@dy")),
    "softmax_backward": Text(
        task="return dx for y = softmax(x) over the last axis, without building the (K, K) Jacobian.",
        doc="""Backward of softmax_forward.

        Inputs: dy of shape (N..., K), the upstream gradient; cache from softmax_forward
                (cache.y, the probabilities, shape (N..., K)).
        Returns: dx of shape (N..., K), a fresh array.
        """,
        steps=("Write dy_j/dx_k for one row: what is it when j == k, and when j != k?",
               "Contract that Jacobian with dy: which single number per row appears?",
               "Which shape does that per-row number need so that it broadcasts against (N..., K)?",
               "What must each row of dx sum to, and why (shift the row of x by a constant)?"),
        hints=("Lesson 2, section 3: the Jacobian is diag(y) - y y^T. You never need it as a "
               "matrix; multiply it by dy on paper first.",
               "Per row you need one scalar, the dot product of dy and y, kept as shape (N..., 1); "
               "the rest is elementwise.",
               "dx = y * (dy - sum(dy * y, last axis, keepdims))."),
        answers=("y*(dy-", "dy-sum(dy*y", "dy*y).sum(")),
    "softmax_cross_entropy": Text(
        task="return the mean cross-entropy of softmax(logits) against the labels and its "
             "gradient, stably for large logits.",
        doc="""Softmax cross-entropy with hard labels, averaged over the batch.

        loss = -(1/N) sum_n log softmax(logits_n)[labels_n]

        Inputs:
        - logits: (N, C) float, finite
        - labels: (N,) integer, 0 <= label < C
        Returns a tuple of:
        - loss: 0-d scalar of logits.dtype
        - dlogits: (N, C), a fresh array
        """,
        steps=("exp(1000) overflows: what can you subtract from each row of logits without "
               "changing the softmax?",
               "How do you pick log p[n, labels[n]] for every n at once?",
               "Differentiate -log softmax(z)[c] by z_k: what do the softmax and the log leave?",
               "The loss is a mean over N examples: what does that do to the gradient?"),
        hints=("Lesson 2, sections 1-2: the log and the softmax's Jacobian cancel into something "
               "very simple; and the row max makes exp safe.",
               "Compute log-probabilities with the row max subtracted (there is a helper in this "
               "file's imports); index them with (arange(N), labels); the gradient starts from "
               "the probabilities and changes one entry per row.",
               "loss = -mean(logp[rows, labels]); dlogits = (softmax(logits) - onehot(labels)) / N."),
        answers=("p-onehot", "-onehot)/n")),
    "layernorm_backward": Text(
        task="return dx, dgamma and dbeta from the cached xhat, rstd and gamma.",
        steps=("y = xhat * gamma + beta: what does this give for dgamma and dbeta (over which axes "
               "do you sum)?",
               "What is dxhat, the gradient reaching the normalised input?",
               "xhat = (x - mean) * rstd, and the mean and rstd depend on x too: which two "
               "per-row means of dxhat (one of them weighted by xhat) appear?",
               "Check yourself: what must each row of dx sum to, and what must its dot product "
               "with xhat be (shift, then rescale a row of x)?"),
        hints=("Lesson 3, section 2: LayerNorm does not change when you shift a row of x or "
               "(for tiny eps) rescale it. dx must be blind to both directions.",
               "dbeta and dgamma sum dy (and dy * xhat) over every leading axis. For dx, start "
               "from dxhat = dy * gamma and remove from it its row mean and its component along "
               "xhat, then scale by rstd.",
               "dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), means over H."),
        answers=("xhat*mean(dxhat*xhat)", "dxhat-mean(dxhat)", "rstd*(dxhat")),
    "gelu_backward": Text(
        task="return dx for the exact GELU y = x * Phi(x), using Phi(x) from the cache.",
        doc="""Backward of gelu_forward (the exact GELU, y = x * Phi(x), Phi the standard normal CDF).

        Inputs: dy (same shape as x); cache from gelu_forward (cache.x, and cache.cdf = Phi(x)).
        Returns: dx, fresh.
        """,
        steps=("y is a product x * Phi(x): what does the product rule give?",
               "What is the derivative of the standard normal CDF Phi (its density, written out)?",
               "Which constant must you cast to x's dtype so that float32 stays float32?",
               "How does the upstream gradient dy enter?"),
        hints=("Lesson 3, sections 3-4: the derivative of Phi is the Gaussian density, "
               "exp(-x^2/2) / sqrt(2 pi).",
               "Two terms: one is already in the cache; the other is x times the density. "
               "Multiply by dy at the end.",
               "dx = dy * (Phi(x) + x * phi(x)) with phi(x) = exp(-x^2/2) / sqrt(2 pi)."),
        answers=("phi(x)+x*phi(x)", "Phi(x)+x*phi")),
    "embedding_backward": Text(
        task="return dtable of shape (V, H): the gradient of the table for the looked-up ids.",
        steps=("Row id of the table was copied to every position where ids == id: what does each "
               "such position send back to it?",
               "An id that appears twice: do its two upstream rows overwrite each other or add up?",
               "What goes into the rows of ids that were never looked up?",
               "Why does `dtable[ids] += dout` not do what you want (try it with a repeated id)?"),
        hints=("Lesson 5: the lookup out = table[ids] copies rows; its backward routes each row of "
               "dout back to its source row.",
               "Start from zeros of shape (V, H). Fancy-index assignment with repeated indices "
               "writes once; you need an unbuffered add (NumPy has one) or a loop over positions.",
               "np.add.at(dtable, ids.reshape(-1), dout.reshape(-1, H))."),
        answers=("np.add.at(",)),
    "attention_backward": Text(
        task="backpropagate through the output projection, probs @ v with dropout, the softmax, "
             "the scaled q k^T and the fused QKV projection.",
        steps=("y = ctx @ W_o + b_o: which layer backward gives dctx, dW_o, db_o, and how do you "
               "split dctx into heads (B, nh, T, hs)?",
               "ctx = dropped @ v with dropped = probs * drop.mask (when dropout was on): what are "
               "dv and d(dropped)?",
               "How do you get from d(dropped) to dprobs, and where does the extra dprobs "
               "(a gradient on the probabilities BEFORE dropout) join?",
               "Which backward takes you through the softmax, and where does the extra dscores join?",
               "scores = q k^T with q already scaled: what are dq and dk, and what happens to the scale?",
               "How do dq, dk, dv go back together into the (B, T, 3H) layout [q | k | v] for the "
               "last linear backward?"),
        hints=("Lesson 4: go through the forward line by line in reverse; every line is a matmul, "
               "an elementwise product or a layer you already have a backward for.",
               "Keep the tensors per head (B, nh, T, hs) until the end. The dropout mask in the "
               "cache multiplies on the way back exactly as on the way forward; the extra "
               "gradients are added to dprobs and dscores at the point where those tensors "
               "were read. q was scaled before the matmul, so dq needs the scale again.",
               "dv = dropped^T @ dctx; dp = (dctx @ v^T) * mask + dprobs; ds = softmax_backward(dp) "
               "+ dscores; dq = scale * ds @ k; dk = ds^T @ q (q is cached scaled); then one "
               "linear_backward on [dq | dk | dv]."),
        answers=("dp*=drop.mask", "ds.swapaxes(-1,-2)@q")),
    "encoder_layer_backward": Text(
        task="compose the layer backwards (LayerNorm, dropout, linear, GELU, attention) in reverse "
             "order, and return dx and one gradient per parameter of this layer.",
        steps=("Which cache holds the last operation of the forward, and which backward undoes it?",
               "The FFN branch: in which order do you undo dropout, the out linear, the GELU and "
               "the in linear?",
               "x1 fed both the FFN branch and the residual sum: what do you do with its two gradients?",
               "The attention half: which backwards, and where do dscores and dprobs go?",
               "x itself fed the attention and a residual sum too: what is left to add?",
               "Which parameter names (see the forward) must the grads dict hold?"),
        hints=("Lesson 5, section 1: a residual sum x + f(x) passes its gradient to both terms. "
               "Read encoder_layer_forward from the bottom up.",
               "Nine backwards, one per cached step, then two additions for the two residual sums; "
               "the grads dict has the same keys as the layer's parameters "
               "(f\"encoder.{cache.index}.attn.qkv.W\", ...).",
               "ds2 -> dropout -> ffn out -> gelu -> ffn in, dx1 = that + ds2; ds1 = LN backward of "
               "dx1 -> dropout -> attention_backward(da, cache.attn, dscores, dprobs), dx = that + ds1."),
        answers=("dx1+=ds2", "dx+=ds1")),
    "adamw_step": Text(
        task="update params, state.m, state.v and state.step in place: one step of Adam with "
             "bias correction and decoupled weight decay (none on biases and LayerNorm).",
        doc="""One AdamW update (Loshchilov & Hutter), in place on params and state.

        For each parameter p with gradient g, at step t = state.step + 1, Adam keeps running
        averages m (of g, rate beta1) and v (of g*g, rate beta2), corrects them for having
        started at zero, and moves p by lr * m_hat / (sqrt(v_hat) + eps). AdamW also shrinks p
        towards 0 by the factor lr * weight_decay, outside the Adam scaling ("decoupled"),
        except for the names no_decay(name) exempts.

        Inputs:
        - params, grads: dicts with identical keys; grads[k] has params[k]'s shape and dtype
        - state: AdamWState from adamw_init (or state_from_arrays)
        - lr, beta1, beta2, eps, weight_decay: floats
        Returns None (params, state.m, state.v, state.step are updated; grads are not modified).
        """,
        steps=("What is t, and when do you increment state.step?",
               "How are m and v updated from g (in place, in the parameter's dtype)?",
               "m and v start at 0: by what do you divide them so that the first steps are not tiny?",
               "Where does the weight decay go so that Adam's scaling does not weaken it, and "
               "which names skip it?",
               "Which Python floats must you cast to the parameter's dtype to keep float32?"),
        hints=("Lesson 6, section 2: AdamW = Adam + a decay applied to the weights directly, not "
               "added to the gradient.",
               "Per parameter: the decay multiplies p (unless no_decay(name)); m and v are "
               "exponential moving averages; the bias corrections are 1 - beta**t.",
               "p *= 1 - lr*wd (decayed names); m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; "
               "p -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)."),
        answers=("p*=(1-lr*wd)", "p-=lr*wd*p")),
}
