// Filled in by the tests of the cni library.
#include <gtest/gtest.h>
