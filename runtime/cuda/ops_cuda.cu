// ops_cuda.cu: see ops_cuda.h.
#include "runtime/cuda/ops_cuda.h"

#include <cuda_bf16.h>
#include <math.h>

#include "runtime/cuda/gemm_lt.h"

// ---------------------------------------------------------------------------
// dtype helpers: kernels are templates over the storage type T (float or
// __nv_bfloat16); the host entry points dispatch on CudaDtype.

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

#define DISPATCH_DT(dt, T, ...)                   \
    do {                                          \
        if ((dt) == CUDA_BF16) {                  \
            typedef __nv_bfloat16 T;              \
            __VA_ARGS__;                          \
        } else {                                  \
            typedef float T;                      \
            __VA_ARGS__;                          \
        }                                         \
    } while (0)

static unsigned grid_for(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    CHECK(b <= 0x7fffffffu, "grid of %zu blocks is too large", b);
    return (unsigned)(b ? b : 1);
}

// Block-wide sum of one float per thread (blockDim.x a multiple of 32, <= 1024).
__device__ float block_sum(float v) {
    __shared__ float red[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads(); // red may still be read by a previous call
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// ---------------------------------------------------------------------------
// Matrix products (cuBLAS; tuned cuBLASLt for bf16 with EARNEST_CUDA_GEMM=tuned)

__global__ void bias_add_kernel(float *out, const float *bias, size_t N, size_t OC) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < N * OC; i += (size_t)gridDim.x * blockDim.x)
        out[i] += bias[i % OC];
}

extern "C" void matmul_forward_cuda(float *out, const void *inp, const void *weight, const float *bias, size_t N,
                                    size_t C, size_t OC, float beta, CudaDtype dt, const CudaContext *cx) {
    if (N == 0) return;
    CHECK(N < (1u << 31) && C < (1u << 31) && OC < (1u << 31), "matmul_forward_cuda: sizes beyond int");
    if (dt != CUDA_BF16 || !cx->gemm ||
        !gemm_lt_matmul(cx->gemm, cx->blas, out, inp, weight, (int)N, (int)C, (int)OC, beta, cx->stream))
        gemm_ex(cx->blas, out, inp, weight, (int)N, (int)C, (int)OC, beta, dt == CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F);
    if (bias) {
        bias_add_kernel<<<grid_for(N * OC, 256), 256, 0, cx->stream>>>(out, bias, N, OC);
        CUDA_CHECK_LAUNCH();
    }
}

// ---------------------------------------------------------------------------
// Norm, rotary embedding, SwiGLU, embedding, row moves

template <typename T>
__global__ void rmsnorm_kernel(T *out, const float *inp, const float *weight, size_t C, float eps) {
    const float *x = inp + blockIdx.x * C;
    T *y = out + blockIdx.x * C;
    float ss = 0.0f;
    for (size_t c = threadIdx.x; c < C; c += blockDim.x) ss += x[c] * x[c];
    ss = block_sum(ss);
    float s = 1.0f / sqrtf(ss / (float)C + eps);
    for (size_t c = threadIdx.x; c < C; c += blockDim.x) y[c] = from_f32<T>(x[c] * s * weight[c]);
}

extern "C" void rmsnorm_forward_cuda(void *out, const float *inp, const float *weight, size_t N, size_t C, float eps,
                                     CudaDtype dt, cudaStream_t st) {
    if (N == 0) return;
    DISPATCH_DT(dt, T, rmsnorm_kernel<T><<<(unsigned)N, 256, 0, st>>>((T *)out, inp, weight, C, eps));
    CUDA_CHECK_LAUNCH();
}

__global__ void rope_kernel(float *x, const int *positions, const float *inv_freq, size_t N, size_t H, size_t E,
                            size_t stride) {
    size_t half = E / 2, n_pairs = N * H * half;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n_pairs; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / (H * half), h = (i / half) % H, j = i % half;
        float s, c;
        sincosf((float)positions[n] * inv_freq[j], &s, &c);
        float *v = x + n * stride + h * E;
        float a = v[j], b = v[j + half];
        v[j] = a * c - b * s;
        v[j + half] = b * c + a * s;
    }
}

extern "C" void rope_forward_cuda(float *x, const int *positions, const float *inv_freq, size_t N, size_t H, size_t E,
                                  size_t stride, cudaStream_t st) {
    if (N == 0) return;
    rope_kernel<<<grid_for(N * H * (E / 2), 256), 256, 0, st>>>(x, positions, inv_freq, N, H, E, stride);
    CUDA_CHECK_LAUNCH();
}

template <typename T>
__global__ void swiglu_kernel(T *out, const float *gate, const float *up, size_t N, size_t F, size_t stride) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < N * F; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / F, f = i % F;
        float g = gate[n * stride + f];
        out[i] = from_f32<T>(g / (1.0f + expf(-g)) * up[n * stride + f]);
    }
}

extern "C" void swiglu_forward_cuda(void *out, const float *gate, const float *up, size_t N, size_t F, size_t stride,
                                    CudaDtype dt, cudaStream_t st) {
    if (N == 0) return;
    DISPATCH_DT(dt, T, swiglu_kernel<T><<<grid_for(N * F, 256), 256, 0, st>>>((T *)out, gate, up, N, F, stride));
    CUDA_CHECK_LAUNCH();
}

template <typename T>
__global__ void embedding_kernel(float *out, const int *tokens, const T *table, size_t N, size_t C) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < N * C; i += (size_t)gridDim.x * blockDim.x)
        out[i] = to_f32(table[(size_t)tokens[i / C] * C + i % C]);
}

extern "C" void embedding_forward_cuda(float *out, const int *tokens, const void *table, size_t N, size_t C,
                                       CudaDtype dt, cudaStream_t st) {
    if (N == 0) return;
    DISPATCH_DT(dt, T, embedding_kernel<T><<<grid_for(N * C, 256), 256, 0, st>>>(out, tokens, (const T *)table, N, C));
    CUDA_CHECK_LAUNCH();
}

__global__ void rows_gather_kernel(float *out, const float *inp, const int *src, size_t N, size_t C) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < N * C; i += (size_t)gridDim.x * blockDim.x)
        out[i] = inp[(size_t)src[i / C] * C + i % C];
}

extern "C" void rows_gather_cuda(float *out, const float *inp, const int *src, size_t N, size_t C, cudaStream_t st) {
    if (N == 0) return;
    rows_gather_kernel<<<grid_for(N * C, 256), 256, 0, st>>>(out, inp, src, N, C);
    CUDA_CHECK_LAUNCH();
}

__global__ void fill_nan_kernel(float *out, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __int_as_float(0x7fc00000);
}

__global__ void rows_scatter_kernel(float *out, const float *inp, const int *dst, size_t N, size_t C) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < N * C; i += (size_t)gridDim.x * blockDim.x)
        out[(size_t)dst[i / C] * C + i % C] = inp[i];
}

extern "C" void rows_scatter_nan_cuda(float *out, const float *inp, const int *dst, size_t N, size_t T, size_t C,
                                      cudaStream_t st) {
    if (T == 0) return;
    fill_nan_kernel<<<grid_for(T * C, 256), 256, 0, st>>>(out, T * C);
    CUDA_CHECK_LAUNCH();
    if (N == 0) return;
    rows_scatter_kernel<<<grid_for(N * C, 256), 256, 0, st>>>(out, inp, dst, N, C);
    CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------
// Attention
//
// One block of 128 threads holds a tile of BQ = 32 query rows (pre-scaled by
// 1/sqrt(E)) in shared memory and streams keys and values through it in
// tiles of BK = 32, with the online softmax: thread (row q = tid / 4, sub =
// tid % 4) scores keys sub, sub + 4, ... of each key tile for its row, and
// owns E/4 output columns of that row (float4 groups sub, sub + 4, ...: the 4
// threads of a row hit different banks). Rows are padded by 4 floats.

#define ATTN_THREADS 128

template <int E> struct AttnShape {
    static constexpr int LD = E + 4;                                                    // padded row (floats)
    static constexpr int SMEM = (3 * ATTN_CUDA_BQ * LD + ATTN_CUDA_BQ * (ATTN_CUDA_BK + 1)) * (int)sizeof(float);
    static constexpr int NC4 = E / 16;                                                  // float4 columns per thread
};

// The running softmax state of one thread's row: max, sum, unnormalised output columns.
template <int E> struct AttnState {
    float m, l;
    float4 acc[AttnShape<E>::NC4];
};

template <int E> __device__ __forceinline__ void attn_state_init(AttnState<E> &s) {
    s.m = -INFINITY;
    s.l = 0.0f;
#pragma unroll
    for (int c = 0; c < AttnShape<E>::NC4; c++) s.acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
}

// 16 bytes of T (4 floats or 8 bf16) to floats at dst (16-byte aligned).
template <typename T> __device__ __forceinline__ void vec_to_f32(float *dst, uint4 v);
template <> __device__ __forceinline__ void vec_to_f32<float>(float *dst, uint4 v) {
    *(float4 *)dst = make_float4(__uint_as_float(v.x), __uint_as_float(v.y), __uint_as_float(v.z), __uint_as_float(v.w));
}
template <> __device__ __forceinline__ void vec_to_f32<__nv_bfloat16>(float *dst, uint4 v) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) { // a bf16 is the top half of its float
        dst[2 * i] = __uint_as_float(w[i] << 16);
        dst[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

// Streams keys/values [k_begin, k_end) (rows of E elements) through the
// block's state; the thread's row sees keys < lim. All threads must call it.
template <int E, typename T>
__device__ void attn_stream_keys(AttnState<E> &s, const float *qs, float *ks, float *vs, float *ps, const T *K,
                                 const T *V, int k_begin, int k_end, int lim) {
    constexpr int LD = AttnShape<E>::LD, BK = ATTN_CUDA_BK;
    const int tid = threadIdx.x, q = tid >> 2, sub = tid & 3;
    // The tile's K and V arrive in 16-byte vectors, all of a thread's loads
    // issued before any is used (the decode grid is small: latency, not
    // bandwidth, sets the pace).
    constexpr int VEC = 16 / (int)sizeof(T), NV = BK * E / VEC, NJ = (NV + ATTN_THREADS - 1) / ATTN_THREADS;
    for (int kt = k_begin; kt < k_end; kt += BK) {
        uint4 kv[NJ], vv[NJ];
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            int i = j * ATTN_THREADS + tid, key = kt + i / (E / VEC), e = (i % (E / VEC)) * VEC;
            bool in = i < NV && key < k_end;
            kv[j] = in ? *(const uint4 *)(K + (size_t)key * E + e) : make_uint4(0u, 0u, 0u, 0u);
            vv[j] = in ? *(const uint4 *)(V + (size_t)key * E + e) : make_uint4(0u, 0u, 0u, 0u);
        }
        __syncthreads(); // the previous tile is no longer read
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            int i = j * ATTN_THREADS + tid, r = i / (E / VEC), e = (i % (E / VEC)) * VEC;
            if (i < NV) {
                vec_to_f32<T>(ks + r * LD + e, kv[j]);
                vec_to_f32<T>(vs + r * LD + e, vv[j]);
            }
        }
        __syncthreads();
        float sc[BK / 4], mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < BK / 4; j++) {
            int kr = sub + 4 * j, key = kt + kr;
            float d = 0.0f;
            const float4 *qa = (const float4 *)(qs + q * LD), *ka = (const float4 *)(ks + kr * LD);
#pragma unroll
            for (int e4 = 0; e4 < E / 4; e4++) {
                float4 x = qa[e4], y = ka[e4];
                d += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
            }
            sc[j] = key < lim && key < k_end ? d : -INFINITY;
            mx = fmaxf(mx, sc[j]);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        float m_new = fmaxf(s.m, mx), sum = 0.0f;
        float scale = m_new == -INFINITY ? 1.0f : expf(s.m - m_new);
#pragma unroll
        for (int j = 0; j < BK / 4; j++) {
            float p = sc[j] == -INFINITY ? 0.0f : expf(sc[j] - m_new);
            ps[q * (BK + 1) + sub + 4 * j] = p;
            sum += p;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        s.l = s.l * scale + sum;
        s.m = m_new;
        __syncwarp(); // the row's 4 threads are in one warp
#pragma unroll
        for (int c = 0; c < AttnShape<E>::NC4; c++) {
            float4 a = s.acc[c];
            a.x *= scale; a.y *= scale; a.z *= scale; a.w *= scale;
            const int col = 4 * (sub + 4 * c);
            for (int j = 0; j < BK; j++) {
                float p = ps[q * (BK + 1) + j];
                float4 v = *(const float4 *)(vs + j * LD + col);
                a.x += p * v.x; a.y += p * v.y; a.z += p * v.z; a.w += p * v.w;
            }
            s.acc[c] = a;
        }
    }
}

// Parent part: grid (max_chunks, n_tiles).
template <int E, typename T>
__global__ void __launch_bounds__(ATTN_THREADS) attn_shared_kernel(float *part_m, float *part_l, float *part_acc,
                                                                   const float *q, const AttnParentTileCuda *tiles,
                                                                   int chunk_len, int rows, int H, int G, int sq) {
    constexpr int LD = AttnShape<E>::LD, BQ = ATTN_CUDA_BQ;
    const AttnParentTileCuda t = tiles[blockIdx.y];
    const int chunk = blockIdx.x, k_begin = chunk * chunk_len;
    if (k_begin >= t.P) return; // the whole block leaves together
    const int k_end = min(t.P, k_begin + chunk_len), hpg = H / G;
    extern __shared__ float4 smem4[];
    float *qs = (float *)smem4, *ks = qs + BQ * LD, *vs = ks + BQ * LD, *ps = vs + BQ * LD;
    const float scale = rsqrtf((float)E);
    const int n_pairs = t.n_rows * hpg;
    constexpr int NQ = BQ * E / 4, NJ = (NQ + ATTN_THREADS - 1) / ATTN_THREADS; // float4s of the query tile
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        int i = j * ATTN_THREADS + threadIdx.x, r = i / (E / 4), e = (i % (E / 4)) * 4, p = t.v0 + r;
        int row = t.row0 + p / hpg, h = t.g * hpg + p % hpg;
        if (i < NQ) {
            float4 x = p < n_pairs ? *(const float4 *)(q + (size_t)row * sq + (size_t)h * E + e)
                                   : make_float4(0.f, 0.f, 0.f, 0.f);
            *(float4 *)(qs + r * LD + e) = make_float4(x.x * scale, x.y * scale, x.z * scale, x.w * scale);
        }
    }
    const int qr = threadIdx.x >> 2, sub = threadIdx.x & 3, p = t.v0 + qr;
    AttnState<E> s;
    attn_state_init<E>(s);
    const size_t head = (size_t)t.g * (size_t)t.cap * E;
    attn_stream_keys<E, T>(s, qs, ks, vs, ps, (const T *)t.k + head, (const T *)t.v + head, k_begin, k_end,
                           p < n_pairs ? k_end : 0);
    if (p >= n_pairs) return;
    const int row = t.row0 + p / hpg, h = t.g * hpg + p % hpg;
    const size_t at = ((size_t)chunk * rows + row) * H + h;
    if (sub == 0) {
        part_m[at] = s.m;
        part_l[at] = s.l;
    }
#pragma unroll
    for (int c = 0; c < AttnShape<E>::NC4; c++) *(float4 *)(part_acc + at * E + 4 * (sub + 4 * c)) = s.acc[c];
}

// Own part and merge: grid (n_tiles, H).
template <int E, typename T>
__global__ void __launch_bounds__(ATTN_THREADS) attn_cached_kernel(T *out, const float *q, const AttnTileCuda *tiles,
                                                                   const float *part_m, const float *part_l,
                                                                   const float *part_acc, int rows, int H, int G,
                                                                   int sq) {
    constexpr int LD = AttnShape<E>::LD, BQ = ATTN_CUDA_BQ;
    const AttnTileCuda t = tiles[blockIdx.x];
    const int h = blockIdx.y, g = h / (H / G);
    extern __shared__ float4 smem4[];
    float *qs = (float *)smem4, *ks = qs + BQ * LD, *vs = ks + BQ * LD, *ps = vs + BQ * LD;
    const float scale = rsqrtf((float)E);
    for (int i = threadIdx.x; i < BQ * E; i += ATTN_THREADS) {
        int r = i / E, e = i % E;
        qs[r * LD + e] = r < t.n_rows ? q[(size_t)(t.row0 + r) * sq + (size_t)h * E + e] * scale : 0.0f;
    }
    const int qr = threadIdx.x >> 2, sub = threadIdx.x & 3;
    const int lim = qr < t.n_rows ? t.n_old + t.i0 + qr + 1 : 0; // own entries this row sees
    AttnState<E> s;
    attn_state_init<E>(s);
    const size_t head = (size_t)g * (size_t)t.cap * E;
    attn_stream_keys<E, T>(s, qs, ks, vs, ps, (const T *)t.k + head, (const T *)t.v + head, 0,
                           t.n_old + t.i0 + t.n_rows, lim);
    if (qr >= t.n_rows) return;
    const int row = t.row0 + qr;
    for (int c = 0; c < t.n_chunks; c++) {
        size_t at = ((size_t)c * rows + row) * H + h;
        float mc = part_m[at], lc = part_l[at], m_new = fmaxf(s.m, mc);
        float a = s.m == -INFINITY ? 0.0f : expf(s.m - m_new), b = expf(mc - m_new);
        s.l = s.l * a + lc * b;
        s.m = m_new;
#pragma unroll
        for (int k = 0; k < AttnShape<E>::NC4; k++) {
            float4 x = s.acc[k], y = *(const float4 *)(part_acc + at * E + 4 * (sub + 4 * k));
            s.acc[k] = make_float4(x.x * a + y.x * b, x.y * a + y.y * b, x.z * a + y.z * b, x.w * a + y.w * b);
        }
    }
    const float inv = 1.0f / s.l;
    T *o = out + (size_t)row * H * E + (size_t)h * E;
#pragma unroll
    for (int k = 0; k < AttnShape<E>::NC4; k++) {
        int col = 4 * (sub + 4 * k);
        float4 x = s.acc[k];
        o[col] = from_f32<T>(x.x * inv);
        o[col + 1] = from_f32<T>(x.y * inv);
        o[col + 2] = from_f32<T>(x.z * inv);
        o[col + 3] = from_f32<T>(x.w * inv);
    }
}

extern "C" int attention_cuda_head_dim_ok(int E) { return E == 16 || E == 32 || E == 64 || E == 128; }

template <int E, typename T> static void attn_shared_launch(float *pm, float *pl, float *pa, const float *q,
                                                            const AttnParentTileCuda *tiles, int n_tiles,
                                                            int max_chunks, int chunk, int rows, int H, int G, int sq,
                                                            cudaStream_t st) {
    static int attr_set = 0; // per template instance; the opt-in is process-wide
    if (!attr_set) {
        CUDA_CHECK(cudaFuncSetAttribute(attn_shared_kernel<E, T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        AttnShape<E>::SMEM));
        attr_set = 1;
    }
    dim3 grid((unsigned)max_chunks, (unsigned)n_tiles);
    attn_shared_kernel<E, T><<<grid, ATTN_THREADS, AttnShape<E>::SMEM, st>>>(pm, pl, pa, q, tiles, chunk, rows, H, G,
                                                                            sq);
    CUDA_CHECK_LAUNCH();
}

template <int E, typename T> static void attn_cached_launch(void *out, const float *q, const AttnTileCuda *tiles,
                                                            int n_tiles, const float *pm, const float *pl,
                                                            const float *pa, int rows, int H, int G, int sq,
                                                            cudaStream_t st) {
    static int attr_set = 0;
    if (!attr_set) {
        CUDA_CHECK(cudaFuncSetAttribute(attn_cached_kernel<E, T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        AttnShape<E>::SMEM));
        attr_set = 1;
    }
    dim3 grid((unsigned)n_tiles, (unsigned)H);
    attn_cached_kernel<E, T><<<grid, ATTN_THREADS, AttnShape<E>::SMEM, st>>>((T *)out, q, tiles, pm, pl, pa, rows, H,
                                                                            G, sq);
    CUDA_CHECK_LAUNCH();
}

#define DISPATCH_E(E_, F, ...)                                 \
    do {                                                        \
        switch (E_) {                                           \
        case 16: F<16, T>(__VA_ARGS__); break;                  \
        case 32: F<32, T>(__VA_ARGS__); break;                  \
        case 64: F<64, T>(__VA_ARGS__); break;                  \
        case 128: F<128, T>(__VA_ARGS__); break;                \
        default: DIE("attention: head size %d unsupported", (int)(E_)); \
        }                                                       \
    } while (0)

extern "C" void attention_shared_forward_cuda(float *part_m, float *part_l, float *part_acc, const float *q,
                                              const AttnParentTileCuda *tiles, int n_tiles, int max_chunks,
                                              int chunk, size_t rows, size_t H, size_t G, size_t E, size_t sq,
                                              CudaDtype dt, cudaStream_t st) {
    if (n_tiles == 0 || max_chunks == 0) return;
    CHECK(chunk > 0 && chunk % ATTN_CUDA_BK == 0, "attention_shared_forward_cuda: chunk %d is not a positive multiple "
          "of %d", chunk, ATTN_CUDA_BK);
    DISPATCH_DT(dt, T, DISPATCH_E(E, attn_shared_launch, part_m, part_l, part_acc, q, tiles, n_tiles, max_chunks, chunk,
                                  (int)rows, (int)H, (int)G, (int)sq, st));
}

extern "C" int attention_chunk_len(int max_parent, int n_tiles, int n_sms) {
    if (max_parent <= 0 || n_tiles <= 0) return ATTN_CUDA_CHUNK;
    int want = (2 * n_sms + n_tiles - 1) / n_tiles;                       // chunks per tile for two blocks per SM
    int len = (max_parent + want - 1) / want;
    len = (len + ATTN_CUDA_BK - 1) / ATTN_CUDA_BK * ATTN_CUDA_BK;
    return len < ATTN_CUDA_BK ? ATTN_CUDA_BK : len > ATTN_CUDA_CHUNK ? ATTN_CUDA_CHUNK : len;
}

extern "C" void attention_cached_forward_cuda(void *out, const float *q, const AttnTileCuda *tiles, int n_tiles,
                                              const float *part_m, const float *part_l, const float *part_acc,
                                              size_t rows, size_t H, size_t G, size_t E, size_t sq, CudaDtype dt,
                                              cudaStream_t st) {
    if (n_tiles == 0) return;
    DISPATCH_DT(dt, T, DISPATCH_E(E, attn_cached_launch, out, q, tiles, n_tiles, part_m, part_l, part_acc, (int)rows,
                                  (int)H, (int)G, (int)sq, st));
}

template <typename T>
__global__ void kv_append_kernel(const KvAppendCuda *dst, const float *k, const float *v, size_t G, size_t E,
                                 size_t sk) {
    const KvAppendCuda d = dst[blockIdx.x];
    const size_t r = blockIdx.x;
    for (size_t i = threadIdx.x; i < G * E; i += blockDim.x) {
        size_t g = i / E, e = i % E, at = ((size_t)g * d.cap + d.slot) * E + e;
        ((T *)d.k)[at] = from_f32<T>(k[r * sk + i]);
        ((T *)d.v)[at] = from_f32<T>(v[r * sk + i]);
    }
}

extern "C" void kv_append_cuda(const KvAppendCuda *dst, const float *k, const float *v, size_t rows, size_t G,
                               size_t E, size_t sk, CudaDtype dt, cudaStream_t st) {
    if (rows == 0) return;
    DISPATCH_DT(dt, T, kv_append_kernel<T><<<(unsigned)rows, 256, 0, st>>>(dst, k, v, G, E, sk));
    CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------
// Beam search selection

__global__ void logsumexp_kernel(double *lse, const float *x, size_t V) {
    __shared__ double redd[32];
    __shared__ float redf[32];
    const float *row = x + blockIdx.x * V;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    float mx = -INFINITY;
    for (size_t i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, row[i]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if (lane == 0) redf[w] = mx;
    __syncthreads();
    mx = -INFINITY;
    for (int i = 0; i < nw; i++) mx = fmaxf(mx, redf[i]);
    double s = 0.0;
    for (size_t i = threadIdx.x; i < V; i += blockDim.x) s += exp((double)row[i] - (double)mx);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) redd[w] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int i = 0; i < nw; i++) t += redd[i];
        lse[blockIdx.x] = (double)mx + log(t);
    }
}

extern "C" void logsumexp_rows_cuda(double *lse, const float *x, size_t N, size_t V, cudaStream_t st) {
    if (N == 0) return;
    logsumexp_kernel<<<(unsigned)N, 256, 0, st>>>(lse, x, V);
    CUDA_CHECK_LAUNCH();
}

typedef struct {
    double score;
    int beam, edge; // beam -1: none
} Cand;

// a before b in the search's order: higher score, then earlier beam, then earlier edge.
__device__ __forceinline__ bool cand_before(const Cand &a, const Cand &b) {
    if (b.beam < 0) return a.beam >= 0;
    if (a.beam < 0) return false;
    if (a.score != b.score) return a.score > b.score;
    if (a.beam != b.beam) return a.beam < b.beam;
    return a.edge < b.edge;
}

#define SELECT_THREADS 256

// One block per user. Round i picks the first candidate in the order among
// those after round i-1's pick, so nothing is stored per candidate.
__global__ void __launch_bounds__(SELECT_THREADS) beam_select_kernel(
    int *out_n, int *out_beam, int *out_edge, double *out_score, const float *logits, const double *lse,
    const int *row0, const int *n_beams, const int *node, const double *score, const int *first_edge,
    const int *edge_token, int W, size_t V) {
    extern __shared__ int pref[]; // [W + 1] candidates before beam j
    __shared__ Cand warp_best[SELECT_THREADS / 32];
    __shared__ Cand pick;
    const int u = blockIdx.x, nb = n_beams[u], r0 = row0[u];
    const int *nd = node + (size_t)u * W;
    const double *sc = score + (size_t)u * W;
    if (threadIdx.x == 0) {
        pref[0] = 0;
        for (int j = 0; j < nb; j++) pref[j + 1] = pref[j] + first_edge[nd[j] + 1] - first_edge[nd[j]];
        pick.beam = -1;
    }
    __syncthreads();
    const int nc = pref[nb], lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int got = 0;
    for (int i = 0; i < W; i++) {
        const Cand prev = pick;
        Cand best = {0.0, -1, -1};
        for (int c = threadIdx.x; c < nc; c += SELECT_THREADS) {
            int lo = 0, hi = nb; // beam j: pref[j] <= c < pref[j + 1]
            while (hi - lo > 1) {
                int mid = (lo + hi) >> 1;
                if (pref[mid] <= c) lo = mid; else hi = mid;
            }
            int ed = first_edge[nd[lo]] + (c - pref[lo]);
            size_t row = (size_t)(r0 + lo);
            Cand x = {sc[lo] + ((double)logits[row * V + (size_t)edge_token[ed]] - lse[row]), lo, ed};
            if ((i == 0 || cand_before(prev, x)) && cand_before(x, best)) best = x;
        }
        for (int o = 16; o > 0; o >>= 1) {
            Cand y;
            y.score = __shfl_xor_sync(0xffffffffu, best.score, o);
            y.beam = __shfl_xor_sync(0xffffffffu, best.beam, o);
            y.edge = __shfl_xor_sync(0xffffffffu, best.edge, o);
            if (cand_before(y, best)) best = y;
        }
        if (lane == 0) warp_best[w] = best;
        __syncthreads();
        if (threadIdx.x == 0) {
            Cand b = warp_best[0];
            for (int k = 1; k < SELECT_THREADS / 32; k++)
                if (cand_before(warp_best[k], b)) b = warp_best[k];
            pick = b;
            if (b.beam >= 0) {
                size_t at = (size_t)u * W + i;
                out_beam[at] = b.beam;
                out_edge[at] = b.edge;
                out_score[at] = b.score;
            }
        }
        __syncthreads();
        if (pick.beam < 0) break;
        got++;
    }
    if (threadIdx.x == 0) out_n[u] = got;
}

extern "C" void beam_select_cuda(int *out_n, int *out_beam, int *out_edge, double *out_score, const float *logits,
                                 const double *lse, const int *row0, const int *n_beams, const int *node,
                                 const double *score, const int *first_edge, const int *edge_token, size_t U,
                                 size_t W, size_t V, cudaStream_t st) {
    if (U == 0) return;
    size_t smem = (W + 1) * sizeof(int);
    CHECK(smem <= 48 * 1024, "beam_select_cuda: width %zu too large", W);
    beam_select_kernel<<<(unsigned)U, SELECT_THREADS, smem, st>>>(out_n, out_beam, out_edge, out_score, logits, lse,
                                                                  row0, n_beams, node, score, first_edge, edge_token,
                                                                  (int)W, V);
    CUDA_CHECK_LAUNCH();
}

__global__ void beams_reorder_kernel(uint4 *dst, const uint4 *src, const int *from, size_t n, size_t words) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n * words; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = src[(size_t)from[i / words] * words + i % words];
}

extern "C" void beams_reorder_cuda(void *dst, const void *src, const int *from, size_t n, size_t elems, CudaDtype dt,
                                   cudaStream_t st) {
    size_t bytes = elems * cuda_dtype_size(dt);
    if (n == 0 || bytes == 0) return;
    CHECK(bytes % 16 == 0, "beams_reorder_cuda: beam blocks of %zu bytes are not 16-byte multiples", bytes);
    beams_reorder_kernel<<<grid_for(n * (bytes / 16), 256), 256, 0, st>>>((uint4 *)dst, (const uint4 *)src, from, n,
                                                                          bytes / 16);
    CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------
// Weights

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

template <typename T> __global__ void fill_normal_kernel(T *out, size_t n, uint64_t seed, float std) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t a = splitmix64(seed ^ splitmix64(2 * i)), b = splitmix64(seed ^ splitmix64(2 * i + 1));
        float u1 = ((float)(a >> 40) + 1.0f) * (1.0f / 16777217.0f); // (0, 1]
        float u2 = (float)(b >> 40) * (1.0f / 16777216.0f);
        out[i] = from_f32<T>(std * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2));
    }
}

template <typename T> __global__ void fill_const_kernel(T *out, size_t n, float value) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = from_f32<T>(value);
}

template <typename T> __global__ void convert_kernel(T *out, const float *in, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = from_f32<T>(in[i]);
}

static unsigned grid_capped(size_t n) {
    size_t b = (n + 255) / 256;
    return (unsigned)(b < 65536 ? (b ? b : 1) : 65536);
}

extern "C" void fill_normal_cuda(void *out, size_t n, uint64_t seed, float std, CudaDtype dt, cudaStream_t st) {
    if (n == 0) return;
    DISPATCH_DT(dt, T, fill_normal_kernel<T><<<grid_capped(n), 256, 0, st>>>((T *)out, n, seed, std));
    CUDA_CHECK_LAUNCH();
}

extern "C" void fill_const_cuda(void *out, size_t n, float value, CudaDtype dt, cudaStream_t st) {
    if (n == 0) return;
    DISPATCH_DT(dt, T, fill_const_kernel<T><<<grid_capped(n), 256, 0, st>>>((T *)out, n, value));
    CUDA_CHECK_LAUNCH();
}

extern "C" void convert_f32_cuda(void *out, const float *in, size_t n, CudaDtype dt, cudaStream_t st) {
    if (n == 0) return;
    DISPATCH_DT(dt, T, convert_kernel<T><<<grid_capped(n), 256, 0, st>>>((T *)out, in, n));
    CUDA_CHECK_LAUNCH();
}
