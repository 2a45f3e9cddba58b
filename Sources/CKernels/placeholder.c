#include "ckernels.h"
void ckernels_placeholder(void) {}
