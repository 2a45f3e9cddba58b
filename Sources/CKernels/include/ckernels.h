// SIMD kernels with runtime CPU dispatch.
#pragma once
void ckernels_placeholder(void);
