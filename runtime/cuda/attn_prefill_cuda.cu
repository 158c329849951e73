// attn_prefill_cuda.cu: attention_prefill_forward_cuda (see ops_cuda.h), the
// causal prefill attention of bf16 sequences on the tensor cores, laid out as
// FlashAttention-2 does it. One block of 4 warps takes ATTN_CUDA_BQ_TC = 64
// query rows of one sequence and one head; warp w owns rows 16w..16w+15 and
// keeps everything of its rows in registers:
//   Q_w   [16, E]   bf16 A fragments, loaded once
//   S_w   [16, 64]  = Q_w K^T                 mma m16n8k16, f32 accumulators
//   P_w   [16, 64]  = exp2(S_w * scale*log2e - m), re-packed from the S
//                     accumulators straight into A fragments (bf16)
//   O_w   [16, E]  += P_w V                    f32 accumulators, rescaled by
//                     the online softmax as m grows
// K and V stream through shared memory in tiles of 64 keys with cp.async,
// double-buffered: tile i+1 loads while tile i is multiplied. K fragments
// come from ldmatrix, V's (which the product needs transposed) from
// ldmatrix.trans. Rows are padded by 8 bf16 so ldmatrix's 8 row addresses
// fall in distinct banks. Row sums stay per lane until the end.
#include "runtime/cuda/ops_cuda.h"

#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>

namespace {

constexpr int BQ = ATTN_CUDA_BQ_TC; // query rows per block, 16 per warp
constexpr int BK = 64;              // keys per tile
constexpr int THREADS = 2 * BQ;     // 4 warps
static_assert(BQ == 64, "the block is 4 warps of 16 rows");

template <int E> struct Tile {
    static constexpr int LD = E + 8;          // bf16 row stride in shared memory
    static constexpr int ELEMS = BK * LD;     // one K or V tile
    static constexpr int SMEM = 4 * ELEMS * 2; // K and V, two buffers each, bytes
};

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16 bytes global -> shared, asynchronous; zero-filled when !valid (src is then not read).
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all_but_one() { asm volatile("cp.async.wait_group 1;\n" ::); }

// Four 8x8 bf16 matrices from shared memory; lane l gives the address of row l%8 of matrix l/8.
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}

// d [16, 8] += a [16, 16] b [16, 8]: bf16 in, f32 accumulate. Lane (g = lane/4,
// t = lane%4) holds a = {(g, 2t..), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)},
// b = {(2t.., g), (2t+8.., g)}, d = {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}.
__device__ __forceinline__ void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); // lo in the low half: the lower column
    return *reinterpret_cast<uint32_t *>(&v);
}

// Keys kt..kt+BK-1 of one kv head into Ks/Vs (rows at and past n_end zero-filled).
template <int E>
__device__ __forceinline__ void load_kv_tile(__nv_bfloat16 *Ks, __nv_bfloat16 *Vs, const __nv_bfloat16 *K,
                                             const __nv_bfloat16 *V, int kt, int n_end) {
    constexpr int CH = E / 8; // 16-byte chunks per row
    for (int i = threadIdx.x; i < BK * CH; i += THREADS) {
        int r = i / CH, c = (i % CH) * 8, key = kt + r;
        bool ok = key < n_end;
        size_t off = (size_t)(ok ? key : 0) * E + c;
        cp_async16(Ks + r * Tile<E>::LD + c, K + off, ok);
        cp_async16(Vs + r * Tile<E>::LD + c, V + off, ok);
    }
}

// Two adjacent f32 of Q (row r of the tile, columns c, c+1) as one bf16 pair; 0 past the tile's rows.
__device__ __forceinline__ uint32_t q_pair(const float *q, const AttnTileCuda &t, int r, int c, int sq) {
    if (r >= t.n_rows) return 0u;
    float2 v = *reinterpret_cast<const float2 *>(q + (size_t)(t.row0 + r) * sq + c);
    return pack_bf16(v.x, v.y);
}

template <int E>
__global__ void __launch_bounds__(THREADS)
    attn_prefill_kernel(__nv_bfloat16 *out, const float *q, const AttnTileCuda *tiles, int n_tiles, int H, int G,
                        int sq) {
    typedef Tile<E> TL;
    const AttnTileCuda t = tiles[n_tiles - 1 - (int)blockIdx.x]; // a sequence's last (longest) tiles start first
    const int h = blockIdx.y, g = h / (H / G), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int fg = lane >> 2, ft = lane & 3;          // fragment row (and row + 8) and column pair
    const int mi = lane >> 3, mr = lane & 7;          // ldmatrix: matrix and row this lane addresses
    extern __shared__ float4 smem4[];
    __nv_bfloat16 *sm = reinterpret_cast<__nv_bfloat16 *>(smem4);
    const __nv_bfloat16 *K = (const __nv_bfloat16 *)t.k + (size_t)g * t.cap * E;
    const __nv_bfloat16 *V = (const __nv_bfloat16 *)t.v + (size_t)g * t.cap * E;
    const int n_end = t.n_old + t.i0 + t.n_rows, n_kt = (n_end + BK - 1) / BK;
    load_kv_tile<E>(sm, sm + TL::ELEMS, K, V, 0, n_end);
    cp_async_commit();

    const int r0 = 16 * warp + fg; // this lane's rows: r0 and r0 + 8
    uint32_t qf[E / 16][4];
#pragma unroll
    for (int kk = 0; kk < E / 16; kk++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            int c = h * E + 16 * kk + 8 * hf + 2 * ft;
            qf[kk][2 * hf] = q_pair(q, t, r0, c, sq);
            qf[kk][2 * hf + 1] = q_pair(q, t, r0 + 8, c, sq);
        }
    const int lim[2] = {r0 < t.n_rows ? t.n_old + t.i0 + r0 + 1 : 0, // keys each row sees
                        r0 + 8 < t.n_rows ? t.n_old + t.i0 + r0 + 9 : 0};
    const float sl = rsqrtf((float)E) * 1.4426950408889634f; // softmax scale, in log2 units
    float o[E / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < E / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

    for (int it = 0; it < n_kt; it++) {
        const int kt = it * BK;
        const __nv_bfloat16 *Ks = sm + (it & 1) * 2 * TL::ELEMS, *Vs = Ks + TL::ELEMS;
        if (it + 1 < n_kt) {
            __nv_bfloat16 *Kn = sm + ((it + 1) & 1) * 2 * TL::ELEMS;
            load_kv_tile<E>(Kn, Kn + TL::ELEMS, K, V, kt + BK, n_end);
        }
        cp_async_commit();
        cp_async_wait_all_but_one(); // tile it has landed (this thread's part)
        __syncthreads();             // ... and everyone's

        float s[BK / 8][4];
#pragma unroll
        for (int j = 0; j < BK / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < E / 16; kk++)
#pragma unroll
            for (int j2 = 0; j2 < BK / 16; j2++) { // keys 16 j2.. : two n-tiles per ldmatrix
                uint32_t b[4];
                ldsm_x4(b, Ks + (16 * j2 + (mi >> 1) * 8 + mr) * TL::LD + 16 * kk + (mi & 1) * 8);
                mma_bf16(s[2 * j2], qf[kk], b[0], b[1]);
                mma_bf16(s[2 * j2 + 1], qf[kk], b[2], b[3]);
            }

        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int j = 0; j < BK / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = kt + 8 * j + 2 * ft + (e & 1);
                float v = key < lim[e >> 1] ? s[j][e] * sl : -INFINITY;
                s[j][e] = v;
                mx[e >> 1] = fmaxf(mx[e >> 1], v);
            }
        float base[2], resc[2];
#pragma unroll
        for (int rh = 0; rh < 2; rh++) { // the row's max over its quad of lanes
            mx[rh] = fmaxf(mx[rh], __shfl_xor_sync(0xffffffffu, mx[rh], 1));
            mx[rh] = fmaxf(mx[rh], __shfl_xor_sync(0xffffffffu, mx[rh], 2));
            base[rh] = mx[rh] == -INFINITY ? 0.0f : mx[rh]; // a row with nothing seen yet: p = 0, no NaN
            resc[rh] = exp2f(m[rh] - base[rh]);
            m[rh] = mx[rh];
            l[rh] *= resc[rh];
        }
        uint32_t pf[BK / 16][4];
#pragma unroll
        for (int j = 0; j < BK / 8; j++) {
            float p0 = exp2f(s[j][0] - base[0]), p1 = exp2f(s[j][1] - base[0]);
            float p2 = exp2f(s[j][2] - base[1]), p3 = exp2f(s[j][3] - base[1]);
            l[0] += p0 + p1;
            l[1] += p2 + p3;
            pf[j >> 1][2 * (j & 1)] = pack_bf16(p0, p1);     // row r0:     keys 16(j/2) + 8(j%2) + 2t..
            pf[j >> 1][2 * (j & 1) + 1] = pack_bf16(p2, p3); // row r0 + 8
        }
#pragma unroll
        for (int n = 0; n < E / 8; n++) {
            o[n][0] *= resc[0], o[n][1] *= resc[0];
            o[n][2] *= resc[1], o[n][3] *= resc[1];
        }
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++)
#pragma unroll
            for (int n2 = 0; n2 < E / 16; n2++) { // dims 16 n2.. : two n-tiles per ldmatrix
                uint32_t b[4];
                ldsm_x4_trans(b, Vs + (16 * kk + (mi & 1) * 8 + mr) * TL::LD + 16 * n2 + (mi >> 1) * 8);
                mma_bf16(o[2 * n2], pf[kk], b[0], b[1]);
                mma_bf16(o[2 * n2 + 1], pf[kk], b[2], b[3]);
            }
        __syncthreads(); // the next iteration refills this buffer
    }

#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
        l[rh] += __shfl_xor_sync(0xffffffffu, l[rh], 1);
        l[rh] += __shfl_xor_sync(0xffffffffu, l[rh], 2);
        int r = r0 + 8 * rh;
        if (r >= t.n_rows) continue;
        float inv = 1.0f / l[rh];
        __nv_bfloat16 *dst = out + (size_t)(t.row0 + r) * H * E + (size_t)h * E + 2 * ft;
#pragma unroll
        for (int n = 0; n < E / 8; n++)
            *reinterpret_cast<__nv_bfloat162 *>(dst + 8 * n) =
                __floats2bfloat162_rn(o[n][2 * rh] * inv, o[n][2 * rh + 1] * inv);
    }
}

template <int E>
void attn_prefill_launch(void *out, const float *q, const AttnTileCuda *tiles, int n_tiles, int H, int G, int sq,
                         cudaStream_t st) {
    static bool attr_set = false;
    if (!attr_set) {
        CUDA_CHECK(cudaFuncSetAttribute(attn_prefill_kernel<E>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        Tile<E>::SMEM));
        attr_set = true;
    }
    dim3 grid((unsigned)n_tiles, (unsigned)H);
    attn_prefill_kernel<E><<<grid, THREADS, Tile<E>::SMEM, st>>>((__nv_bfloat16 *)out, q, tiles, n_tiles, H, G, sq);
    CUDA_CHECK_LAUNCH();
}

} // namespace

extern "C" void attention_prefill_forward_cuda(void *out, const float *q, const AttnTileCuda *tiles, int n_tiles,
                                               size_t H, size_t G, size_t E, size_t sq, cudaStream_t st) {
    if (n_tiles == 0) return;
    CHECK(H % G == 0 && sq % 2 == 0, "attention_prefill_forward_cuda: H %zu, G %zu, sq %zu", H, G, sq);
    switch (E) {
    case 16: attn_prefill_launch<16>(out, q, tiles, n_tiles, (int)H, (int)G, (int)sq, st); break;
    case 32: attn_prefill_launch<32>(out, q, tiles, n_tiles, (int)H, (int)G, (int)sq, st); break;
    case 64: attn_prefill_launch<64>(out, q, tiles, n_tiles, (int)H, (int)G, (int)sq, st); break;
    case 128: attn_prefill_launch<128>(out, q, tiles, n_tiles, (int)H, (int)G, (int)sq, st); break;
    default: DIE("attention_prefill_forward_cuda: head size %zu unsupported", E);
    }
}
