#pragma once
// Starting a child process for a test, with its stdout on a pipe.

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

namespace test_support {

/// Starts `path` with `args` (and extra environment assignments); returns its PID
/// and the read end of a pipe on its stdout.
inline std::pair<pid_t, int> spawn(const std::string& path, std::vector<std::string> args,
                                   const std::vector<std::string>& environment = {}) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // Never outlives a test that crashed.
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    for (const auto& assignment : environment) putenv(const_cast<char*>(assignment.c_str()));
    std::vector<char*> argv{const_cast<char*>(path.c_str())};
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  return {pid, fds[0]};
}

}  // namespace test_support
