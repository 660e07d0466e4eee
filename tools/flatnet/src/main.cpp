#include "flatnet/emulator/cli.hpp"

int main(int argc, char** argv) {
  return flatnet::emulator::run_cli(argc, argv);
}
