#include "cwire.h"
void cwire_placeholder(void) {}
