// The header is all there is: SwiftPM needs one source file to build a C target.
#include "CFuzzerDriver.h"
