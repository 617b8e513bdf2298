// main.cc - pagewire-run: parse the command line, find the program, run the
// job (launcher.h), exit with its status.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cluster/launcher/launch_options.h"
#include "cluster/launcher/launcher.h"

int main(int argc, char** argv) {
  using pagewire::launcher::kExitUsage;
  std::vector<std::string> args(argv + 1, argv + argc);
  auto options = pagewire::launcher::ParseLaunchOptions(args);
  if (!options.ok()) {
    std::fprintf(stderr,
                 "pagewire-run: %s\nTry 'pagewire-run --help' for usage.\n",
                 std::string(options.status().message()).c_str());
    return kExitUsage;
  }
  if (options->help) {
    std::fputs(pagewire::launcher::Usage().c_str(), stdout);
    return 0;
  }
  auto program = pagewire::launcher::ResolveProgram(options->argv[0],
                                                    std::getenv("PATH"));
  if (!program.ok()) {
    std::fprintf(stderr, "pagewire-run: %s\n",
                 std::string(program.status().message()).c_str());
    return kExitUsage;
  }
  pagewire::launcher::Launcher launcher(*std::move(options),
                                        *std::move(program));
  return launcher.Run();
}
