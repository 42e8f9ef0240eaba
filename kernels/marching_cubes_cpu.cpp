// Compiled CPU path of the label-aware marching cubes: the CUDA kernels of marching_cubes.cu built as C++ and
// run over their index space with OpenMP (one loop iteration per CUDA thread), plus a plain loop for step 1
// (whose CUDA version uses warp ballots). Built on first use by kernels/_native.py:
//   g++ -O3 -fopenmp -shared -fPIC -DLABEL_KIND=k -I kernels kernels/marching_cubes_cpu.cpp -o <cache>/mc_k.so
// The NumPy oracle (kernels/marching_cubes.py) is what the tests compare it with.

#include <cstdint>
#include <cstring>
#include <vector>

struct Dim {
    unsigned int x = 0;
};
static thread_local Dim threadIdx;
static thread_local Dim blockIdx;
static const Dim blockDim = {256};

// Only mc_edge_words uses these; it is not called here (step 1 has its own loop below).
static inline unsigned int __ballot_sync(unsigned int, bool) { return 0u; }
static inline void __syncthreads() {}
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __popcll(x) __builtin_popcountll(x)
#define __ffsll(x) __builtin_ffsll(x)

#include "marching_cubes.cu"

// Padded row (i, j) of the label volume into buf[0..P2] (buf[P2] = 0 as the +k neighbour of the last voxel).
static void fill_row(const label_t* lab, int i, int j, int n0, int n1, int n2, label_t* buf, int P2) {
    if (i < 1 || j < 1 || i > n0 || j > n1) {
        std::memset(buf, 0, sizeof(label_t) * (P2 + 1));
        return;
    }
    buf[0] = 0;
    std::memcpy(buf + 1, lab + (static_cast<long long>(i - 1) * n1 + (j - 1)) * n2, sizeof(label_t) * n2);
    std::memset(buf + 1 + n2, 0, sizeof(label_t) * (P2 - n2));
}

// 64 flags (bytes 0/1) -> bits, flag t at bit t (each 8 flags gathered with one multiply).
static inline u64 pack64(const unsigned char* f) {
    u64 out = 0;
    for (int q = 0; q < 8; ++q) {
        u64 x;
        std::memcpy(&x, f + 8 * q, 8);
        out |= ((__builtin_bswap64(x) * 0x8040201008040201ull) >> 56) << (8 * q);
    }
    return out;
}

template <typename F>
static void for_threads(long long n_items, F kernel) {
#pragma omp parallel for schedule(static)
    for (long long t = 0; t < n_items; ++t) {
        blockIdx.x = static_cast<unsigned int>(t / 256);
        threadIdx.x = static_cast<unsigned int>(t % 256);
        kernel();
    }
}

static void exclusive(const long long* counts, long long n, long long* prefix, long long* total) {
    long long s = 0;
    for (long long i = 0; i < n; ++i) {
        prefix[i] = s;
        s += counts[i];
    }
    *total = s;
}

extern "C" {

// Steps 1-3: edge words (3 * nw), their prefix, cell words (n_cw), their prefix; totals[0] = vertices,
// totals[1] = boundary cells. counts_scratch holds max(3 * nw, n_cw) int64.
int mc_cpu_words(const label_t* lab, int n0, int n1, int n2, u64* edges, long long* eprefix, u64* cells,
                 long long* cprefix, long long* counts_scratch, long long* totals) {
    const int P0 = n0 + 2, P1 = n1 + 2, W = (n2 + 2 + 63) / 64, P2 = 64 * W;
    const long long nw = static_cast<long long>(P0) * P1 * W;
    // one padded row (i, j) at a time: the row and its +i / +j neighbours copied into padded buffers, per-voxel
    // flags computed in vectorisable loops, then packed 8 at a time
#pragma omp parallel
    {
        std::vector<label_t> cur(P2 + 1), ni(P2 + 1), nj(P2 + 1);
        std::vector<unsigned char> f0(P2), f1(P2), f2(P2);
#pragma omp for schedule(static)
        for (long long row = 0; row < static_cast<long long>(P0) * P1; ++row) {
            const int j = static_cast<int>(row % P1);
            const int i = static_cast<int>(row / P1);
            fill_row(lab, i, j, n0, n1, n2, cur.data(), P2);
            fill_row(lab, i + 1, j, n0, n1, n2, ni.data(), P2);
            fill_row(lab, i, j + 1, n0, n1, n2, nj.data(), P2);
            const label_t* c = cur.data();
            const label_t* a = ni.data();
            const label_t* b = nj.data();
            for (int k = 0; k < P2; ++k) {
                f0[k] = c[k] != a[k];
                f1[k] = c[k] != b[k];
                f2[k] = c[k] != c[k + 1];  // c[P2] = 0 = c[P2 - 1] (padding): the last voxel gets no +k edge
            }
            const bool has_i = i + 1 < P0, has_j = j + 1 < P1;
            for (int w = 0; w < W; ++w) {
                const u64 b0 = has_i ? pack64(f0.data() + 64 * w) : 0ull;
                const u64 b1 = has_j ? pack64(f1.data() + 64 * w) : 0ull;
                const u64 b2 = pack64(f2.data() + 64 * w);
                const long long word = row * W + w;
                edges[word] = b0;
                edges[nw + word] = b1;
                edges[2 * nw + word] = b2;
                counts_scratch[word] = __builtin_popcountll(b0);
                counts_scratch[nw + word] = __builtin_popcountll(b1);
                counts_scratch[2 * nw + word] = __builtin_popcountll(b2);
            }
        }
    }
    exclusive(counts_scratch, 3 * nw, eprefix, &totals[0]);
    const long long n_cw = static_cast<long long>(P0 - 1) * (P1 - 1) * W;
    for_threads(n_cw, [&] { mc_cell_words(edges, P0, P1, W, cells, counts_scratch); });
    exclusive(counts_scratch, n_cw, cprefix, &totals[1]);
    return 0;
}

// Steps 4-5a/b: vertices, boundary-cell list, triangles per cell (tri_count, n_cells entries).
int mc_cpu_vertices_cells(const label_t* lab, int n0, int n1, int n2, const unsigned short* lut,
                          const double* affine, const u64* edges, const long long* eprefix, const u64* cells,
                          const long long* cprefix, long long n_cells, const int* n_tri, double* positions, int* lo,
                          int* hi, long long* cell_base, long long* tri_count) {
    const int P0 = n0 + 2, P1 = n1 + 2, W = (n2 + 2 + 63) / 64;
    const long long nw = static_cast<long long>(P0) * P1 * W;
    const long long n_cw = static_cast<long long>(P0 - 1) * (P1 - 1) * W;
    for_threads(3 * nw, [&] {
        mc_vertices(edges, eprefix, lab, n0, n1, n2, P0, P1, W, lut, affine, positions, lo, hi);
    });
    for_threads(n_cw, [&] { mc_list_cells(cells, cprefix, P0, P1, W, cell_base); });
    for_threads(n_cells, [&] {
        mc_count_triangles(cell_base, n_cells, lab, n0, n1, n2, P1, W, lut, n_tri, tri_count);
    });
    return 0;
}

// Step 5c: the triangles (slots and compact label ids) at tri_offset.
int mc_cpu_triangles(const label_t* lab, int n0, int n1, int n2, const unsigned short* lut, const long long* cell_base,
                     long long n_cells, const int* n_tri, const signed char* tri_table, const int* edge_info,
                     const u64* edges, const long long* eprefix, const long long* tri_offset, long long* tri_slots,
                     long long* tri_lab) {
    const int P0 = n0 + 2, P1 = n1 + 2, W = (n2 + 2 + 63) / 64;
    for_threads(n_cells, [&] {
        mc_emit_triangles(cell_base, n_cells, lab, n0, n1, n2, P0, P1, W, lut, n_tri, tri_table, edge_info, edges,
                          eprefix, tri_offset, tri_slots, tri_lab);
    });
    return 0;
}

// Step 6 (what kernels.marching_cubes.split_by_label computes, as a counting sort): slots and triangles grouped
// by compact label id, ties in index order. slot_vertex (2 * n_vert), slot_offsets and tri_offsets (n_ids + 2),
// faces (3 * n_tris, per-label vertex numbers), rank (scratch, 2 * n_vert).
int mc_cpu_split(const long long* tri_slots, const long long* tri_lab, long long n_tris, const int* lo, const int* hi,
                 long long n_vert, int n_ids, long long* slot_vertex, long long* slot_offsets, long long* faces,
                 long long* tri_offsets, long long* rank) {
    std::vector<long long> fill(n_ids + 1, 0), tfill(n_ids + 1, 0);
    for (long long s = 0; s < 2 * n_vert; ++s) ++fill[(s & 1) ? hi[s >> 1] : lo[s >> 1]];
    slot_offsets[0] = 0;
    for (int l = 0; l <= n_ids; ++l) slot_offsets[l + 1] = slot_offsets[l] + fill[l];
    for (int l = 0; l <= n_ids; ++l) fill[l] = slot_offsets[l];
    for (long long s = 0; s < 2 * n_vert; ++s) {
        const int l = (s & 1) ? hi[s >> 1] : lo[s >> 1];
        const long long at = fill[l]++;
        slot_vertex[at] = s >> 1;
        rank[s] = at - slot_offsets[l];
    }
    for (long long t = 0; t < n_tris; ++t) ++tfill[tri_lab[t]];
    tri_offsets[0] = 0;
    for (int l = 0; l <= n_ids; ++l) tri_offsets[l + 1] = tri_offsets[l] + tfill[l];
    for (int l = 0; l <= n_ids; ++l) tfill[l] = tri_offsets[l];
    for (long long t = 0; t < n_tris; ++t) {
        const long long at = tfill[tri_lab[t]]++;
        for (int v = 0; v < 3; ++v) faces[3 * at + v] = rank[tri_slots[3 * t + v]];
    }
    return 0;
}

}  // extern "C"
