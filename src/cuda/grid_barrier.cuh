// The grid-wide barrier of the persistent kernels (ops.cu's decode_layers_kernel, and the
// experiment tools/bench_stream.cu).
#pragma once

// A barrier over the whole grid; every block must be resident (the persistent kernels' grids
// are one wave, launched cooperatively). bar: one counter, zeroed before the launch, that only
// grows; barrier k (from 1) waits until it reaches k times the grid's blocks. The release /
// acquire pair, with the block barriers around it, makes every block's writes before the barrier
// visible to every block after it. (Arrivals spread over 8 counters polled by 8 lanes measured
// the same on the H200.)
// One thread per block: its block's arrival at barrier k and the wait for every other block's.
// The caller puts the block's own barriers around it (grid_barrier: __syncthreads).
__device__ __forceinline__ void grid_arrive_and_wait(unsigned* bar, unsigned k) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(bar) : "memory");
  const unsigned want = k * gridDim.x;
  unsigned seen = 0;
  do {
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(bar) : "memory");
  } while (seen < want);
#else
  (void)bar, (void)k;
  __trap();  // launched only on compute capability 7.0+ (decode_layers_ok)
#endif
}

__device__ __forceinline__ void grid_barrier(unsigned* bar, unsigned k) {
  __syncthreads();
  if (threadIdx.x == 0) grid_arrive_and_wait(bar, k);
  __syncthreads();
}
