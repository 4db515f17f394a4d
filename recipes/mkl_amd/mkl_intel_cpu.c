/* MKL picks its kernels by CPU vendor before instruction set: on an AMD CPU it runs generic code,
   not the AVX2 / AVX-512 kernels the CPU has. It asks this one function whether the CPU is Intel's.
   Preloaded (LD_PRELOAD), this library answers first: yes. See README.md beside it. */
int mkl_serv_intel_cpu_true(void) { return 1; }
