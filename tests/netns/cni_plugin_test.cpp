// Tests of the CNI plugin binaries run as a runtime would.
#include <gtest/gtest.h>
