/* MKL's kernel dispatch asks this function whether the CPU is an Intel one. Loaded into the
   process's global symbol scope before torch loads MKL, it answers first: yes. See kd/mkl_amd.py. */
int mkl_serv_intel_cpu_true(void) { return 1; }
