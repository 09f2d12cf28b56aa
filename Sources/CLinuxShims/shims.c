#include "clinuxshims.h"
