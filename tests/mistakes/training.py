"""Wrong implementations of adamw_step, uniform_layer_map, init_student and param_count."""

import math

import numpy as np

from minibert.model import init_params
from minibert.optim import no_decay


def _adamw(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, *,
           decay_all=False, bias_correction=True, coupled=False, decay_after=False,
           eps_inside=False, count_step=True):
    if count_step:
        state.step += 1
    t = max(state.step, 1)
    for name, p in params.items():
        g = grads[name]
        decay = weight_decay != 0 and (decay_all or not no_decay(name))
        if coupled and decay:
            g = g + weight_decay * p                                             # L2, not decoupled
        if decay and not coupled and not decay_after:
            p *= 1 - lr * weight_decay
        m, v = state.m[name], state.v[name]
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t) if bias_correction else m
        v_hat = v / (1 - beta2 ** t) if bias_correction else v
        denom = np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat) + eps
        p -= (lr * m_hat / denom).astype(p.dtype)
        if decay and not coupled and decay_after:
            p *= 1 - lr * weight_decay


def adamw_decay_on_biases(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    _adamw(params, grads, state, lr, beta1, beta2, eps, weight_decay, decay_all=True)


def adamw_no_bias_correction(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    _adamw(params, grads, state, lr, beta1, beta2, eps, weight_decay, bias_correction=False)


def adamw_l2_coupled(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    _adamw(params, grads, state, lr, beta1, beta2, eps, weight_decay, coupled=True)


def adamw_decay_after_update(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    _adamw(params, grads, state, lr, beta1, beta2, eps, weight_decay, decay_after=True)


def adamw_eps_inside_sqrt(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    _adamw(params, grads, state, lr, beta1, beta2, eps, weight_decay, eps_inside=True)


def adamw_step_not_counted(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    _adamw(params, grads, state, lr, beta1, beta2, eps, weight_decay, count_step=False)


# uniform_layer_map(n_student, n_teacher)
def map_without_embeddings(n_student, n_teacher):
    return [j * n_teacher // n_student for j in range(1, n_student + 1)]


def map_rounded(n_student, n_teacher):
    return [round(j * n_teacher / n_student) for j in range(n_student + 1)]


def map_float(n_student, n_teacher):
    return [j * n_teacher / n_student for j in range(n_student + 1)]


def map_first_layers(n_student, n_teacher):
    return list(range(n_student + 1))                                           # the bottom layers


def map_ceil(n_student, n_teacher):
    return [math.ceil(j * n_teacher / n_student) for j in range(n_student + 1)]


# init_student(teacher_params, teacher_config, config, init_layers, rng, dtype)
def _init(tp, tc, config, init_layers, rng, dtype, *, copy=True, index_j=False, skip_head=False,
          keep_dtype=False):
    params = init_params(config, rng, dtype=dtype)
    if init_layers is None:
        return params
    for name in params:
        if name.startswith("encoder."):
            _, j, rest = name.split(".", 2)
            source = f"encoder.{j if index_j else init_layers[int(j)]}.{rest}"
        else:
            source = name
            if skip_head and name.startswith(("pooler.", "classifier.")):
                continue
        if source in tp:
            params[name] = tp[source].copy() if keep_dtype else tp[source].astype(dtype, copy=copy)
    return params


def init_views_not_copies(tp, tc, config, init_layers, rng, dtype=np.float32):
    return _init(tp, tc, config, init_layers, rng, dtype, copy=False)


def init_first_layers(tp, tc, config, init_layers, rng, dtype=np.float32):
    return _init(tp, tc, config, init_layers, rng, dtype, index_j=True)


def init_forgot_head(tp, tc, config, init_layers, rng, dtype=np.float32):
    return _init(tp, tc, config, init_layers, rng, dtype, skip_head=True)


def init_ignores_dtype(tp, tc, config, init_layers, rng, dtype=np.float32):
    return _init(tp, tc, config, init_layers, rng, dtype, keep_dtype=True)   # the teacher's dtype


# param_count(config)
def _count(config, *, biases=True, layernorms=True, qkv=3, positions=True):
    V, P, Y = config.vocab_size, config.max_position, config.type_vocab_size
    H, I, L, C = config.hidden_size, config.intermediate_size, config.num_layers, config.num_labels
    b = 1 if biases else 0
    ln = 2 * H if layernorms else 0
    emb = (V + (P if positions else 0) + Y) * H + ln
    layer = (H * qkv * H + b * qkv * H) + (H * H + b * H) + (H * I + b * I) + (I * H + b * H) + 2 * ln
    head = (H * H + b * H if config.pooler else 0) + (H * C + b * C if C else 0)
    if config.mlm_head:
        head += H * H + b * H + ln + V
    return {"embeddings": emb, "encoder": L * layer, "head": head, "total": emb + L * layer + head}


def count_forgot_biases(config):
    return _count(config, biases=False)


def count_forgot_layernorms(config):
    return _count(config, layernorms=False)


def count_qkv_as_one_matrix(config):
    return _count(config, qkv=1)


def count_forgot_positions(config):
    return _count(config, positions=False)


MISTAKES = {
    "adamw_step": [(adamw_decay_on_biases, "ffn.in.b after step 1"),
                   (adamw_no_bias_correction, None), (adamw_l2_coupled, None),
                   (adamw_decay_after_update, None), (adamw_eps_inside_sqrt, None),
                   (adamw_step_not_counted, None)],
    "uniform_layer_map": [(map_without_embeddings, "embedding output"), (map_rounded, "rounded"),
                          (map_float, "integers"), (map_first_layers, "last layer"),
                          (map_ceil, "rounded")],
    "init_student": [(init_views_not_copies, "share memory"), (init_first_layers, "right place"),
                     (init_forgot_head, "right place"), (init_ignores_dtype, "float64 parameters")],
    "param_count": [(count_forgot_biases, "per layer"), (count_forgot_layernorms, "embeddings"),
                    (count_qkv_as_one_matrix, "per layer"), (count_forgot_positions, "embeddings")],
}
