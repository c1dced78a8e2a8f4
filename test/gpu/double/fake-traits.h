/* --traits of the GPU double's workload (fake-traits.c). TEST ONLY. */
#ifndef FAKE_TRAITS_H
#define FAKE_TRAITS_H
#include <stddef.h>

/* Opens every trait; 0, or -1 with errno. */
int traits_init(int ns_pid);
/* Uses each trait once; NULL when all work, else "trait: reason". Takes about 20-50 ms. */
const char *traits_check(void);

#endif
