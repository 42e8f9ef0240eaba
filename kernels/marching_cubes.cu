// Label-aware discrete marching cubes: steps 1-5 of kernels/marching_cubes.py (the CPU oracle mirrors each one).
//
// Grid: the label volume (n0, n1, n2), C order, holds the raw label values (0 = background); `lut` (65536 entries)
// maps a raw value to its structure's compact id (0 = not meshed). The volume is padded virtually:
// padded voxel (i, j, k) is data voxel (i-1, j-1, k-1) when that exists, else 0. The padded grid is
// (P0, P1, P2) = (n0+2, n1+2, 64*W) and is walked in 64-voxel words along k: word (i, j, w) covers k = 64w..64w+63,
// bit b of a word is voxel k = 64w + b. Edge words E[a] (a = 0, 1, 2) say that voxel p and p + e_a differ.
//
// Compile: NVRTC through CuPy RawModule (kernels/_cuda.py), or `nvcc -arch=sm_90 --cubin` in the tests.
// LABEL_KIND selects the label dtype read: 0 uint8, 1 uint16, 2 int16, 3 int32 (kernels.marching_cubes.LABEL_KINDS).

#ifndef LABEL_KIND
#define LABEL_KIND 0
#endif

#if LABEL_KIND == 0
typedef unsigned char label_t;
#elif LABEL_KIND == 1
typedef unsigned short label_t;
#elif LABEL_KIND == 2
typedef short label_t;
#else
typedef int label_t;
#endif

typedef unsigned long long u64;
typedef long long i64;

__device__ __forceinline__ int voxel(const label_t* __restrict__ lab, int i, int j, int k, int n0, int n1, int n2) {
    // padded (i, j, k) -> data (i-1, j-1, k-1); outside the data: background
    const int a = i - 1, b = j - 1, c = k - 1;
    if (a < 0 || b < 0 || c < 0 || a >= n0 || b >= n1 || c >= n2) return 0;
    return (int)lab[((i64)a * n1 + b) * n2 + c];
}

// Compact id of a raw label value (0 = not meshed; values outside 0..65535 are never meshed).
__device__ __forceinline__ int compact(const unsigned short* __restrict__ lut, int v) {
    return (v >= 0 && v < 65536) ? (int)lut[v] : 0;
}

// Step 1. Blocks of 256 threads = 4 words; one thread per voxel, bits gathered with warp ballots.
extern "C" __global__ void mc_edge_words(const label_t* __restrict__ lab, int n0, int n1, int n2, int P0, int P1,
                                         int W, u64* __restrict__ edges, i64* __restrict__ counts) {
    __shared__ unsigned int halves[8][3];
    const i64 nw = (i64)P0 * P1 * W;
    const i64 word = (i64)blockIdx.x * 4 + threadIdx.x / 64;
    const int b = threadIdx.x & 63;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    bool e0 = false, e1 = false, e2 = false;
    if (word < nw) {
        const int w = (int)(word % W);
        const i64 row = word / W;
        const int j = (int)(row % P1);
        const int i = (int)(row / P1);
        const int k = w * 64 + b;
        const int P2 = W * 64;
        const int v = voxel(lab, i, j, k, n0, n1, n2);
        if (i + 1 < P0) e0 = v != voxel(lab, i + 1, j, k, n0, n1, n2);
        if (j + 1 < P1) e1 = v != voxel(lab, i, j + 1, k, n0, n1, n2);
        if (k + 1 < P2) e2 = v != voxel(lab, i, j, k + 1, n0, n1, n2);
    }
    const unsigned int m0 = __ballot_sync(0xffffffffu, e0);
    const unsigned int m1 = __ballot_sync(0xffffffffu, e1);
    const unsigned int m2 = __ballot_sync(0xffffffffu, e2);
    if (lane == 0) {
        halves[warp][0] = m0;
        halves[warp][1] = m1;
        halves[warp][2] = m2;
    }
    __syncthreads();
    if (b == 0 && word < nw) {
        for (int a = 0; a < 3; ++a) {
            const u64 bits = (u64)halves[warp][a] | ((u64)halves[warp + 1][a] << 32);
            edges[a * nw + word] = bits;
            counts[a * nw + word] = (i64)__popcll(bits);
        }
    }
}

#define EDGE_WORD(a, ii, jj, ww) edges[(i64)(a) * nw + ((i64)(ii) * P1 + (jj)) * W + (ww)]

// Step 2. One thread per cell word (i, j, w), i < P0-1, j < P1-1: OR of the 12 edges of each cell.
extern "C" __global__ void mc_cell_words(const u64* __restrict__ edges, int P0, int P1, int W, u64* __restrict__ cells,
                                         i64* __restrict__ counts) {
    const i64 nw = (i64)P0 * P1 * W;
    const i64 total = (i64)(P0 - 1) * (P1 - 1) * W;
    const i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= total) return;
    const int w = (int)(t % W);
    const i64 r = t / W;
    const int j = (int)(r % (P1 - 1));
    const int i = (int)(r / (P1 - 1));
    const u64 x = EDGE_WORD(0, i, j, w) | EDGE_WORD(0, i, j + 1, w) | EDGE_WORD(1, i, j, w) | EDGE_WORD(1, i + 1, j, w);
    u64 xn = 0ull;
    if (w + 1 < W) {
        xn = EDGE_WORD(0, i, j, w + 1) | EDGE_WORD(0, i, j + 1, w + 1) | EDGE_WORD(1, i, j, w + 1) |
             EDGE_WORD(1, i + 1, j, w + 1);
    }
    const u64 z =
        EDGE_WORD(2, i, j, w) | EDGE_WORD(2, i + 1, j, w) | EDGE_WORD(2, i, j + 1, w) | EDGE_WORD(2, i + 1, j + 1, w);
    const u64 c = x | (x >> 1) | (xn << 63) | z;
    cells[t] = c;
    counts[t] = (i64)__popcll(c);
}

// Step 5a. One thread per boundary-cell word: flat padded index of each boundary cell, in grid order.
extern "C" __global__ void mc_list_cells(const u64* __restrict__ cells, const i64* __restrict__ prefix, int P0, int P1,
                                         int W, i64* __restrict__ cell_base) {
    const i64 total = (i64)(P0 - 1) * (P1 - 1) * W;
    const i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= total) return;
    u64 c = cells[t];
    if (c == 0ull) return;
    const int w = (int)(t % W);
    const i64 r = t / W;
    const int j = (int)(r % (P1 - 1));
    const int i = (int)(r / (P1 - 1));
    const i64 P2 = (i64)W * 64;
    i64 out = prefix[t];
    while (c) {
        const int b = __ffsll((long long)c) - 1;
        c &= c - 1ull;
        cell_base[out++] = ((i64)i * P1 + j) * P2 + (i64)w * 64 + b;
    }
}

// Step 4. One thread per edge word: vertex position (LPS mm) and the labels on both sides of each crossed edge.
extern "C" __global__ void mc_vertices(const u64* __restrict__ edges, const i64* __restrict__ prefix,
                                       const label_t* __restrict__ lab, int n0, int n1, int n2, int P0, int P1, int W,
                                       const unsigned short* __restrict__ lut, const double* __restrict__ affine,
                                       double* __restrict__ positions,
                                       int* __restrict__ lo, int* __restrict__ hi) {
    const i64 nw = (i64)P0 * P1 * W;
    const i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= 3 * nw) return;
    u64 e = edges[t];
    if (e == 0ull) return;
    const int a = (int)(t / nw);
    const i64 word = t % nw;
    const int w = (int)(word % W);
    const i64 row = word / W;
    const int j = (int)(row % P1);
    const int i = (int)(row / P1);
    i64 g = prefix[t];
    while (e) {
        const int b = __ffsll((long long)e) - 1;
        e &= e - 1ull;
        const int k = w * 64 + b;
        double q0 = (double)(i - 1), q1 = (double)(j - 1), q2 = (double)(k - 1);
        if (a == 0) q0 += 0.5;
        if (a == 1) q1 += 0.5;
        if (a == 2) q2 += 0.5;
        for (int d = 0; d < 3; ++d) {
            // same operation order as kernels.marching_cubes.apply_affine; no fused multiply-add
            const double s = __dadd_rn(__dadd_rn(__dmul_rn(q0, affine[4 * d]), __dmul_rn(q1, affine[4 * d + 1])),
                                       __dmul_rn(q2, affine[4 * d + 2]));
            positions[3 * g + d] = __dadd_rn(s, affine[4 * d + 3]);
        }
        lo[g] = compact(lut, voxel(lab, i, j, k, n0, n1, n2));
        hi[g] = compact(lut, voxel(lab, i + (a == 0), j + (a == 1), k + (a == 2), n0, n1, n2));
        ++g;
    }
}

// Corner ids of the cell at flat padded index `base`; returns them in ids[8] (corner c at offset (c&1, c>>1&1, c>>2&1)).
__device__ __forceinline__ void cell_corners(i64 base, int P1, int W, const label_t* __restrict__ lab, int n0, int n1,
                                             int n2, int ids[8], int* ci, int* cj, int* ck) {
    const i64 P2 = (i64)W * 64;
    const int k = (int)(base % P2);
    const i64 r = base / P2;
    const int j = (int)(r % P1);
    const int i = (int)(r / P1);
    for (int c = 0; c < 8; ++c) ids[c] = voxel(lab, i + (c & 1), j + ((c >> 1) & 1), k + ((c >> 2) & 1), n0, n1, n2);
    *ci = i;
    *cj = j;
    *ck = k;
}

// Case of the label first seen at corner kk, or -1 when that corner's label is not meshed, was seen before, or
// fills the cell.
__device__ __forceinline__ int pair_case(const int ids[8], int kk, const unsigned short* __restrict__ lut) {
    const int l = ids[kk];
    if (compact(lut, l) == 0) return -1;
    for (int j = 0; j < kk; ++j)
        if (ids[j] == l) return -1;
    int c = 0;
    for (int j = 0; j < 8; ++j) c |= (ids[j] == l) << j;
    return c == 255 ? -1 : c;
}

// Step 5b. One thread per boundary cell: number of triangles it emits (all labels).
extern "C" __global__ void mc_count_triangles(const i64* __restrict__ cell_base, i64 n_cells,
                                              const label_t* __restrict__ lab, int n0, int n1, int n2, int P1, int W,
                                              const unsigned short* __restrict__ lut, const int* __restrict__ n_tri,
                                              i64* __restrict__ tri_count) {
    const i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n_cells) return;
    int ids[8];
    int i, j, k;
    cell_corners(cell_base[t], P1, W, lab, n0, n1, n2, ids, &i, &j, &k);
    i64 total = 0;
    for (int kk = 0; kk < 8; ++kk) {
        const int c = pair_case(ids, kk, lut);
        if (c >= 0) total += n_tri[c];
    }
    tri_count[t] = total;
}

// Step 5c. One thread per boundary cell: its triangles as vertex slots (2 * vertex + side) and compact label ids.
// edge_info[4e..4e+3] = offset (0, 1, 2) of edge e's base corner and its axis; tri_table[(case*12 + t)*3 + v].
extern "C" __global__ void mc_emit_triangles(const i64* __restrict__ cell_base, i64 n_cells,
                                             const label_t* __restrict__ lab, int n0, int n1, int n2, int P0, int P1,
                                             int W, const unsigned short* __restrict__ lut,
                                             const int* __restrict__ n_tri,
                                             const signed char* __restrict__ tri_table,
                                             const int* __restrict__ edge_info, const u64* __restrict__ edges,
                                             const i64* __restrict__ edge_prefix, const i64* __restrict__ tri_offset, i64* __restrict__ tri_slots,
                                             i64* __restrict__ tri_lab) {
    const i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n_cells) return;
    const i64 nw = (i64)P0 * P1 * W;
    int ids[8];
    int i, j, k;
    cell_corners(cell_base[t], P1, W, lab, n0, n1, n2, ids, &i, &j, &k);
    i64 out = tri_offset[t];
    for (int kk = 0; kk < 8; ++kk) {
        const int c = pair_case(ids, kk, lut);
        if (c < 0) continue;
        const int l = compact(lut, ids[kk]);
        for (int tr = 0; tr < n_tri[c]; ++tr) {
            for (int v = 0; v < 3; ++v) {
                const int e = tri_table[(c * 12 + tr) * 3 + v];
                const int pi = i + edge_info[4 * e], pj = j + edge_info[4 * e + 1], pk = k + edge_info[4 * e + 2];
                const int a = edge_info[4 * e + 3];
                const i64 word = (i64)a * nw + ((i64)pi * P1 + pj) * W + (pk >> 6);
                const u64 below = edges[word] & ((1ull << (pk & 63)) - 1ull);
                const i64 vert = edge_prefix[word] + (i64)__popcll(below);
                // side 1 when the edge's low voxel (its base corner) does not carry this label
                const int base_corner = edge_info[4 * e] + 2 * edge_info[4 * e + 1] + 4 * edge_info[4 * e + 2];
                tri_slots[3 * out + v] = 2 * vert + (((c >> base_corner) & 1) ? 0 : 1);
            }
            tri_lab[out] = l;
            ++out;
        }
    }
}
