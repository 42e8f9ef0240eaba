// Runs kernels/marching_cubes.cu on the CPU: CUDA built-ins emulated with std::thread (one block of 256 threads
// at a time, __ballot_sync / __syncthreads as barriers), the host glue of kernels/_cuda.py in plain C++.
// Used by tests/kernels/test_marching_cubes_emulated.py to check the CUDA source against the NumPy oracle on a
// machine without a GPU.  Build: g++ -std=c++20 -O1 -pthread -DLABEL_KIND=0 -I kernels this.cpp
//
// Usage: emulator IN_DIR OUT_DIR   (IN_DIR: meta.txt "n0 n1 n2", labels.bin, lut.bin, affine.bin, ntri.bin,
// tritable.bin, edgeinfo.bin; OUT_DIR gets edges.bin cells.bin positions.bin lo.bin hi.bin cell_base.bin tri_slots.bin tri_lab.bin)

#include <atomic>
#include <barrier>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

struct Dim {
    unsigned int x = 0;
};
static thread_local Dim threadIdx;
static thread_local Dim blockIdx;
static Dim blockDim;

static std::barrier<>* g_block_barrier = nullptr;
static std::barrier<>* g_warp_barrier[8] = {};
static unsigned int g_ballot_slots[8][32];

static void __syncthreads() { g_block_barrier->arrive_and_wait(); }

static unsigned int __ballot_sync(unsigned int, bool pred) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    g_ballot_slots[warp][lane] = pred ? 1u : 0u;
    g_warp_barrier[warp]->arrive_and_wait();
    unsigned int m = 0;
    for (int l = 0; l < 32; ++l) m |= g_ballot_slots[warp][l] << l;
    g_warp_barrier[warp]->arrive_and_wait();
    return m;
}

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __popcll(x) __builtin_popcountll(x)
static double __dadd_rn(double a, double b) { return a + b; }
static double __dmul_rn(double a, double b) { return a * b; }
#define __ffsll(x) __builtin_ffsll(x)

#include "marching_cubes.cu"

template <typename T>
static std::vector<T> read_bin(const std::string& path) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    const auto size = static_cast<size_t>(f.tellg());
    std::vector<T> v(size / sizeof(T));
    f.seekg(0);
    f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(size));
    return v;
}

template <typename T>
static void write_bin(const std::string& path, const std::vector<T>& v, size_t n) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(n * sizeof(T)));
}

// Sequential launch for kernels without block-level synchronisation.
template <typename F>
static void launch(long long n_items, unsigned int block, F kernel) {
    blockDim.x = block;
    const long long n_blocks = (n_items + block - 1) / block;
    for (long long b = 0; b < (n_blocks > 0 ? n_blocks : 1); ++b) {
        blockIdx.x = static_cast<unsigned int>(b);
        for (unsigned int t = 0; t < block; ++t) {
            threadIdx.x = t;
            kernel();
        }
    }
}

static std::vector<long long> exclusive(const std::vector<long long>& c, long long* total) {
    std::vector<long long> p(c.size());
    long long s = 0;
    for (size_t i = 0; i < c.size(); ++i) {
        p[i] = s;
        s += c[i];
    }
    *total = s;
    return p;
}

int main(int argc, char** argv) {
    if (argc != 3) return 2;
    const std::string in = argv[1], out = argv[2];
    int n0, n1, n2;
    {
        std::ifstream meta(in + "/meta.txt");
        meta >> n0 >> n1 >> n2;
    }
    const auto lab = read_bin<label_t>(in + "/labels.bin");
    const auto lut = read_bin<unsigned short>(in + "/lut.bin");
    const auto affine = read_bin<double>(in + "/affine.bin");
    const auto n_tri = read_bin<int>(in + "/ntri.bin");
    const auto tri_table = read_bin<signed char>(in + "/tritable.bin");
    const auto edge_info = read_bin<int>(in + "/edgeinfo.bin");
    const int P0 = n0 + 2, P1 = n1 + 2, W = (n2 + 2 + 63) / 64;
    const long long nw = static_cast<long long>(P0) * P1 * W;

    // 1. edge words: 256 real threads per block
    std::vector<u64> edges(3 * nw);
    std::vector<long long> ecounts(3 * nw);
    {
        std::barrier<> block_barrier(256);
        std::vector<std::barrier<>*> warps;
        for (int w = 0; w < 8; ++w) warps.push_back(new std::barrier<>(32));
        g_block_barrier = &block_barrier;
        for (int w = 0; w < 8; ++w) g_warp_barrier[w] = warps[w];
        const long long n_blocks = (nw + 3) / 4;
        blockDim.x = 256;
        std::vector<std::thread> threads;
        for (unsigned int t = 0; t < 256; ++t) {
            threads.emplace_back([&, t] {
                threadIdx.x = t;
                for (long long b = 0; b < n_blocks; ++b) {
                    blockIdx.x = static_cast<unsigned int>(b);
                    mc_edge_words(lab.data(), n0, n1, n2, P0, P1, W, edges.data(), ecounts.data());
                    block_barrier.arrive_and_wait();
                }
            });
        }
        for (auto& th : threads) th.join();
        for (auto* w : warps) delete w;
    }
    // 2. cell words
    const long long n_cw = static_cast<long long>(P0 - 1) * (P1 - 1) * W;
    std::vector<u64> cells(n_cw);
    std::vector<long long> ccounts(n_cw);
    launch(n_cw, 256, [&] { mc_cell_words(edges.data(), P0, P1, W, cells.data(), ccounts.data()); });
    // 3. ranks
    long long n_vert = 0, n_cells = 0, n_tris = 0;
    const auto eprefix = exclusive(ecounts, &n_vert);
    const auto cprefix = exclusive(ccounts, &n_cells);
    // 4. vertices
    std::vector<double> positions(3 * n_vert + 3);
    std::vector<int> lo(n_vert + 1), hi(n_vert + 1);
    launch(3 * nw, 256, [&] {
        mc_vertices(edges.data(), eprefix.data(), lab.data(), n0, n1, n2, P0, P1, W, lut.data(), affine.data(),
                    positions.data(), lo.data(), hi.data());
    });
    // 5. cells, counts, triangles
    std::vector<long long> cell_base(n_cells + 1);
    launch(n_cw, 256, [&] { mc_list_cells(cells.data(), cprefix.data(), P0, P1, W, cell_base.data()); });
    std::vector<long long> tri_count(n_cells + 1);
    launch(n_cells, 256, [&] {
        mc_count_triangles(cell_base.data(), n_cells, lab.data(), n0, n1, n2, P1, W, lut.data(), n_tri.data(),
                           tri_count.data());
    });
    tri_count.resize(n_cells);
    const auto tri_offset = exclusive(tri_count, &n_tris);
    std::vector<long long> tri_slots(3 * n_tris + 3), tri_lab(n_tris + 1);
    launch(n_cells, 256, [&] {
        mc_emit_triangles(cell_base.data(), n_cells, lab.data(), n0, n1, n2, P0, P1, W, lut.data(), n_tri.data(),
                          tri_table.data(), edge_info.data(), edges.data(), eprefix.data(),
                          tri_offset.data(), tri_slots.data(), tri_lab.data());
    });
    write_bin(out + "/edges.bin", edges, edges.size());
    write_bin(out + "/cells.bin", cells, cells.size());
    write_bin(out + "/positions.bin", positions, 3 * n_vert);
    write_bin(out + "/lo.bin", lo, n_vert);
    write_bin(out + "/hi.bin", hi, n_vert);
    write_bin(out + "/cell_base.bin", cell_base, n_cells);
    write_bin(out + "/tri_slots.bin", tri_slots, 3 * n_tris);
    write_bin(out + "/tri_lab.bin", tri_lab, n_tris);
    std::printf("%lld %lld %lld\n", n_vert, n_cells, n_tris);
    return 0;
}
