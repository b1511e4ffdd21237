"""What students read for the distillation exercises (lessons 2, 7, 8, 9); see texts_model.py."""

from minibert.classroom.text import Text

TEXTS = {
    "soft_kl": Text(
        task="return KL(p_teacher || p_student) between the distributions softened at "
             "temperature T (summed over classes, averaged over examples, no T^2) and its "
             "gradient with respect to the student logits.",
        doc="""KL(p_teacher || p_student) between the temperature-softened distributions.

        p_t = softmax(teacher_logits / T), p_s = softmax(student_logits / T)
        loss = (1/N) sum_n sum_c p_t[n,c] * (log p_t[n,c] - log p_s[n,c])     (no T^2 here)

        Inputs:
        - student_logits: (N, C) float, finite
        - teacher_logits: (N, C) float, finite (cast to the student's dtype)
        - T: temperature > 0
        Returns a tuple of:
        - loss: 0-d scalar of student_logits.dtype (>= 0; 0 iff the distributions match)
        - dstudent: (N, C), a fresh array
        """,
        steps=("Which log-softmax do you need for each side, and why compute it stably?",
               "Which of the two terms of the KL depends on the student logits at all?",
               "The student logits enter as z / T: what does the chain rule add?",
               "Sum over classes, mean over examples: what does each do to the gradient's size?"),
        hints=("Lesson 2, sections 4-5: the KL's student part is a cross-entropy against soft "
               "targets p_t, so its gradient looks like the cross-entropy's.",
               "Compute log p_t and log p_s at temperature T, then the loss; the gradient is the "
               "cross-entropy gradient with p_t as the target, with one extra factor from z / T "
               "and one from the mean over N.",
               "dstudent = (p_s - p_t) / (N * T)."),
        answers=("(p_s-p_t)/(n*t)", "/(n*t)")),
    "distillation_loss": Text(
        task="return alpha * CE + (1 - alpha) * T^2 * KL and its gradient w.r.t. the student "
             "logits, plus the unweighted parts.",
        doc="""Hinton et al. (2015) distillation: L = alpha * CE(hard labels) + (1 - alpha) * T^2 * KL.

        Inputs:
        - student_logits: (N, C) float
        - teacher_logits: (N, C) float (frozen; no gradient is returned for it)
        - labels: (N,) integer, 0 <= label < C, or -1 for a row without a gold label: the CE
          is the mean over the labelled rows only (0 when there are none), the KL covers
          every row
        - alpha: weight of the hard-label term, in [0, 1] (1 = plain fine-tuning)
        - T: temperature > 0 of the soft term
        Returns a tuple of:
        - loss: 0-d scalar (student_logits.dtype; with unlabelled rows, float64)
        - dlogits: (N, C), a fresh array of student_logits.dtype
        - parts: {"ce": cross-entropy (over the labelled rows), "kl": KL at temperature T
          WITHOUT the T^2 factor}
        """,
        steps=("Which two library losses give you the hard and the soft term with their gradients?",
               "What weight does each term get, and why is there a T^2 on the soft one (lesson 2, "
               "section 5)?",
               "The total is a weighted sum: what does that make its gradient?",
               "Rows labelled -1 have no gold label: which rows does the CE (and its gradient) "
               "see, and what is it when no row is labelled?",
               "What exactly goes into parts (weighted or not)?"),
        hints=("Lesson 7 (and lesson 2, section 5): the soft term's gradient shrinks like 1/T^2 as "
               "T grows; the T^2 restores its scale so that alpha means the same at every T.",
               "Call cross_entropy (on the labelled rows only) and soft_kl (on all rows); weight "
               "the losses and their gradients by the same two numbers; the CE gradient goes "
               "back into the labelled rows; keep parts unweighted.",
               "loss = alpha*ce + (1-alpha)*T*T*kl; dlogits = alpha*dce + (1-alpha)*T*T*dkl; "
               "parts = {'ce': ce, 'kl': kl}."),
        answers=("(t/n)*(p_s-p_t)", "(t/n)(p_s-p_t)")),
    "uniform_layer_map": Text(
        task="return g, the teacher hidden state each student hidden state learns from "
             "(index 0 is the embedding output).",
        doc="""The uniform student -> teacher hidden-state mapping g.

        Inputs: n_student (Ls) and n_teacher (Lt) encoder layers, 1 <= Ls <= Lt.
        Returns: a list g of Ls+1 integers: g[j] is the teacher hidden state (0 = embedding
        output, Lt = the last layer) that student hidden state j learns from; spread evenly,
        the embeddings to the embeddings and the last layer to the last layer.
        """,
        steps=("How many entries does g have, and what are g[0] and g[Ls]?",
               "If Lt is a multiple of Ls, how many teacher layers does each student layer stand for?",
               "If it is not (4 students, 6 teachers), do you round down or up, and does g stay an "
               "integer list?"),
        hints=("Lesson 8, section 2 prints the map for each student; TinyBERT spaces the layers "
               "evenly.",
               "Student layer j stands for teacher layer j times the ratio Lt / Ls; use integer "
               "arithmetic so the entries are ints.",
               "g = [j * Lt // Ls for j in range(Ls + 1)]."),
        answers=("j*n_teacher//n_student", "j*lt//ls")),
    "init_student": Text(
        task="copy the embeddings, the chosen teacher encoder layers and the head into fresh "
             "student arrays (copies, never views of the teacher).",
        steps=("What does init_layers=None mean, and which function draws a random init?",
               "Student parameter encoder.j.<rest>: which teacher name does it come from?",
               "Which parameters keep their own name (embeddings, pooler, classifier), and what if "
               "the teacher has no such tensor?",
               "Why must each tensor be a copy in the student's dtype (what would training do "
               "to the teacher otherwise, and to two student layers copied from one teacher layer)?"),
        hints=("Lesson 7, section 3: the student starts as a subset of the teacher's layers.",
               "Start from init_params(config, rng, dtype) (that also answers init_layers=None); "
               "then overwrite each tensor whose teacher source exists, mapping encoder.j to "
               "encoder.init_layers[j].",
               "for name in params: source = encoder.{init_layers[j]}.{rest} or name; "
               "params[name] = teacher_params[source].astype(dtype, copy=True)."),
        answers=("astype(dtype,copy=True)",)),
    "hidden_mse": Text(
        task="return the hidden-state MSE through the optional projection, averaged over real "
             "tokens and teacher features, and the gradients for student_h, W and b.",
        steps=("Which tokens count, and what is the number you divide by?",
               "proj = student_h @ W + b: what are d loss / d proj, and where is it zero?",
               "Which matmuls give dstudent_h and dW from dproj, and what is db?",
               "What do you return for dW and db when W or b is None?"),
        hints=("Lesson 8, section 1: a mean of squares over real tokens and features; the "
               "projection is a linear layer, so its backward is lesson 1's.",
               "Mask the difference proj - teacher_h; its gradient is the masked difference times "
               "a constant; then backprop through the linear map (2-D views of (B*T, H) are easiest).",
               "dproj = 2 * mask * (proj - t) / (n_real * Ht); dstudent = dproj @ W.T; "
               "dW = s^T @ dproj; db = dproj summed over B and T."),
        answers=("2.0)*scale", "2*scale")),
    "attention_mse": Text(
        task="return the MSE between student and teacher attention scores over pairs where "
             "both the query and the key are real tokens, and its gradient.",
        steps=("The scores hold -1e9 at padded keys: which (query, key) pairs must you leave out "
               "entirely?",
               "How many entries are averaged (count heads, and the real pairs of each example)?",
               "What is the gradient at a real pair, and at a left-out one?"),
        hints=("Lesson 8, section 1: the padding bias makes padded entries huge and meaningless; "
               "subtracting them invites round-off, so never touch them.",
               "Build a (B, 1, T, T) boolean of real pairs from the mask (an outer AND), compute "
               "the difference only there (np.subtract(..., where=...)), and average over "
               "nh * sum_b n_b^2 entries.",
               "loss = sum(diff^2) / n_pairs; dstudent = 2 * diff / n_pairs, 0 outside real pairs."),
        answers=("2.0/n_pairs", "2/n_pairs")),
    "cosine_loss": Text(
        task="return the mean over real tokens of 1 - cos(student_h, teacher_h) and its gradient "
             "w.r.t. student_h.",
        doc="""DistilBERT hidden-state loss: mean over real tokens of 1 - cos(student_h, teacher_h).

        It aligns the directions of the hidden states and ignores their lengths. Norms are
        clamped below at eps = 1e-8 (a zero vector has cosine 0, not NaN).

        Inputs:
        - student_h: (B, T, H) float
        - teacher_h: (B, T, H) float (cast to the student's dtype)
        - mask: (B, T) 0/1
        Returns a tuple of:
        - loss: 0-d scalar of student_h.dtype, in [0, 2]
        - dstudent_h: (B, T, H), fresh; 0 at padded tokens
        """,
        steps=("Per token, write cos as u . v with u = s / |s|: which parts depend on s?",
               "How does u change when s changes (|s| changes too)?",
               "What is the gradient's size when s is 10 times longer, and why?",
               "How do the mask and the mean over real tokens enter?"),
        hints=("Lesson 8, section 1: the cosine ignores the student's length, so its gradient "
               "must be orthogonal to s.",
               "Differentiate s . v / |s| by s (quotient rule): you get v minus a multiple of u, "
               "divided by |s|; then the sign of 1 - cos, the mask and 1 / n_real.",
               "d(1 - cos)/ds = -(v - cos * u) / |s| per token, times mask / n_real."),
        answers=("(v-cos*u)/|s|", "v-cos_u")),
    "param_count": Text(
        task="return the number of parameters of the embeddings, the encoder and the head, and "
             "their total, from the config alone.",
        steps=("Which tables and which LayerNorm make up the embeddings?",
               "One encoder layer: how many weights and biases do the fused q|k|v projection and "
               "the output projection have?",
               "The feed-forward block and the two LayerNorms of a layer?",
               "What do the pooler, the classifier and the MLM head add (its decoder is tied to "
               "the word embeddings)?"),
        hints=("Lesson 9, section 1 prints the teacher's breakdown: check your total against it "
               "(22.7M for MiniLM with 3 classes).",
               "Every linear layer (D -> M) has D*M + M parameters; every LayerNorm 2*H; a "
               "lookup table rows*H. List the layers of model.param_shapes and add them up.",
               "embeddings (V+P+Y)*H + 2H; per layer 4H^2 + 4H (attention) + 2HI + I + H (FFN) "
               "+ 4H (LayerNorms)."),
        answers=("(v+p+y)*h", "h*3*h+3*h")),
    "relation_kl": Text(
        task="return the KL divergence from the teacher's to the student's softmax over the real "
             "keys of each row, averaged over heads and real query rows, and its gradient with "
             "respect to the student logits (zero wherever the query or the key is padding).",
        doc="""MiniLM's relation loss: KL(teacher row || student row), mean over heads and real queries.

        Row i of head h of example b holds query i's logits over the T keys; both sides are
        turned into distributions over the REAL keys only, and only real query rows count.

        Inputs:
        - student_logits: (B, nh, T, T) float (attention scores, or v v^T / sqrt(hs) for value
          relations); entries at padded keys may hold anything: they must not be read
        - teacher_logits: (B, nh, T, T) float, the same shape (cast to the student's dtype)
        - mask: (B, T) 0/1, 1 = real token (None = no padding)
        Already computed above the region: key_real (B,1,1,T) bool (real keys), pair (B,1,T,T)
        bool (real query AND real key), inv_n = 1 / (nh * n_real) (n_real: real tokens in the
        batch) in the student's dtype.
        Returns a tuple of:
        - loss: 0-d scalar of student_logits.dtype, >= 0, 0 iff every real row matches
        - dstudent_logits: (B, nh, T, T), a fresh array, exactly 0 wherever the query or the
          key is padded
        """,
        steps=("_masked_log_softmax(z, key_real) gives log-probabilities over the real keys of "
               "each row: which of the two sides need it?",
               "KL(p_t || p_s): which distribution weights the log-ratio, and which way round is "
               "the ratio?",
               "Only (real query, real key) entries may enter the sum: how do you leave the "
               "others out without ever subtracting two padded entries (`pair`, where=)?",
               "For p = softmax(z), what is d KL(p_t || p) / dz, row by row, and where must it "
               "be exactly 0?",
               "What is every entry divided by, and which two names must hold your results "
               "(`loss`, `dstudent`)?"),
        hints=("Lesson 10, section 1 (and lesson 2, section 4): per (example, head, real query) "
               "row, the student's part of KL(p_t || p_s) is a cross-entropy against the soft "
               "targets p_t, so its gradient looks like the cross-entropy's.",
               "Take both log-probabilities with _masked_log_softmax(., key_real); sum the "
               "teacher-weighted log-ratio over real pairs only (np.subtract(..., out=zeros, "
               "where=pair)) and multiply by inv_n; the gradient is the softmax cross-entropy "
               "gradient of each row, 0 outside real pairs, times inv_n.",
               "loss = sum over pair of p_t * (logp_t - logp_s) * inv_n; dstudent = "
               "(exp(logp_s) - p_t) * inv_n where pair, 0 elsewhere."),
        answers=("exp(logp_s)-p_t", "p_t*(logp_t-logp_s)")),
    "value_relation_backward": Text(
        task="return dv, the gradient with respect to the values v of r = v v^T / sqrt(hs), "
             "given the upstream gradient dr.",
        doc="""Backward of value_relation_forward (r = v v^T / sqrt(hs), per example and head).

        Inputs: dr (B, nh, T, T) upstream gradient on r; cache from value_relation_forward
                (cache.v (B, nh, T, hs), cache.scale = 1/sqrt(hs) in v's dtype).
        Returns: dv (B, nh, T, hs), a fresh array in v's dtype.
        """,
        steps=("r[i, j] = scale * v_i . v_j: in which entries of r does one value vector v_k "
               "appear, and on which side of the dot product?",
               "For r = a b^T, lesson 1's matmul backward gives da and db: what happens when a "
               "and b are the same tensor?",
               "How do you transpose the last two axes of a (B, nh, T, T) array (what does .T "
               "do to a 4-D array)?",
               "Where does the scale enter, how many times, and in which dtype must dv be?"),
        hints=("Lesson 10, section 1: v is used twice in r = scale * v v^T, once as the left "
               "factor and once as the right one; a tensor used twice gets the sum of the "
               "gradients of both uses.",
               "Write r = scale * a b^T with a = b = v: the left use gives the matmul backward's "
               "da, the right use its db (it needs dr with its last two axes swapped: "
               "swapaxes(-1, -2), not .T); add the two and multiply by cache.scale once.",
               "dv = scale * (dr + dr^T) @ v, with dr^T = dr.swapaxes(-1, -2)."),
        answers=("(dr+dr.swapaxes(-1,-2))", "(dr+dr^t)")),
}
