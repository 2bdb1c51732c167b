#pragma once
// What the end-to-end benchmarks share: launching and stopping dtsd and workers as
// processes, reading their CPU time and memory from /proc, percentiles.

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <memory>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "sdk/client.hpp"

namespace dtsd::bench {

using sdk::json;

inline int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

/// One HTTP/1.1 request on a fresh loopback connection ("Connection: close");
/// returns the status code, or 0 when the server could not be reached. The
/// response's body goes to `response_body` when given.
inline int http_call(const std::string& address, const std::string& method, const std::string& path,
                     const std::string& body = {}, std::string* response_body = nullptr) {
  const auto colon = address.rfind(':');
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<std::uint16_t>(std::stoi(address.substr(colon + 1))));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    close(fd);
    return 0;
  }
  const auto request = method + " " + path + " HTTP/1.1\r\nHost: " + address +
                       "\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body;
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return 0;
  }
  std::string response;
  char chunk[16384];
  for (ssize_t n; (n = read(fd, chunk, sizeof chunk)) > 0;) response.append(chunk, static_cast<std::size_t>(n));
  close(fd);
  if (response.size() < 12) return 0;
  if (response_body != nullptr) {
    const auto end_of_headers = response.find("\r\n\r\n");
    *response_body = end_of_headers == std::string::npos ? std::string() : response.substr(end_of_headers + 4);
  }
  return std::atoi(response.c_str() + 9);
}

/// What a dashboard left open does: every second, the first page of the list and
/// the metrics. Runs until destroyed.
class dashboard_poller {
 public:
  explicit dashboard_poller(std::string address) : address_(std::move(address)) {
    thread_ = std::thread([this] {
      while (!stopping_) {
        const auto list = http_call(address_, "POST", "/api/v1/taskhubs/orchestrations/query",
                                    R"({"pagination":{"startIndex":0,"count":50},)"
                                    R"("sort":[{"column":"LAST_UPDATED_AT","direction":"DESCENDING_SORT"}]})");
        const auto metrics = http_call(address_, "GET", "/metrics");
        ++polls_;
        if (list != 200 || metrics != 200) ++failed_;
        for (int i = 0; i < 10 && !stopping_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  ~dashboard_poller() {
    stopping_ = true;
    thread_.join();
  }
  int polls() const { return polls_; }
  int failed() const { return failed_; }

 private:
  std::string address_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> polls_{0}, failed_{0};
  std::thread thread_;
};

/// The processes a bench started, so that an interrupted bench stops them.
inline std::array<std::atomic<pid_t>, 16>& children() {
  static std::array<std::atomic<pid_t>, 16> started{};
  return started;
}

/// SIGINT, SIGTERM, SIGHUP or the bench's own time limit (SIGALRM): every process
/// it started is killed, then it exits. (Only async-signal-safe calls here.)
extern "C" inline void stop_children_and_exit(int signal) {
  for (auto& slot : children()) {
    const pid_t pid = slot.load();
    if (pid > 0) kill(pid, SIGKILL);
  }
  _exit(128 + signal);
}

/// Call first in a bench's main: an interrupted bench (or one past `timeout_s`,
/// when > 0) leaves nothing running. A bench killed by SIGKILL takes its children
/// along too: each is started with PR_SET_PDEATHSIG.
inline void stop_children_on_exit_signals(int timeout_s = 0) {
  struct sigaction action {};
  action.sa_handler = stop_children_and_exit;
  sigemptyset(&action.sa_mask);
  for (int signal : {SIGINT, SIGTERM, SIGHUP, SIGALRM}) sigaction(signal, &action, nullptr);
  if (timeout_s > 0) alarm(static_cast<unsigned>(timeout_s));
}

inline pid_t launch(const std::string& path, std::vector<std::string> args) {
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);  // The bench died before the line above.
    dup2(STDERR_FILENO, STDOUT_FILENO);  // Its output is progress: the bench's stdout is its JSON alone.
    std::vector<char*> argv{const_cast<char*>(path.c_str())};
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    execvp(path.c_str(), argv.data());
    _exit(127);
  }
  for (auto& slot : children()) {
    pid_t empty = 0;
    if (slot.compare_exchange_strong(empty, pid)) break;
  }
  return pid;
}

/// SIGTERM, then SIGKILL after 10 s.
inline void stop(pid_t pid) {
  if (pid <= 0) return;
  for (auto& slot : children()) {
    pid_t started = pid;
    slot.compare_exchange_strong(started, 0);
  }
  kill(pid, SIGTERM);
  int status = 0;
  for (int i = 0; i < 200 && waitpid(pid, &status, WNOHANG) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
}

/// CPU seconds (user + system) of a live process.
inline double cpu_seconds(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  if (line.rfind(')') == std::string::npos) return 0;  // It has ended.
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

/// Context switches of every thread of `pid` so far (voluntary and not), from
/// /proc/PID/task/*/status: each is a thread going to sleep or being preempted,
/// the cost of a hop between threads.
inline long long context_switches(pid_t pid) {
  long long total = 0;
  std::error_code ignored;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ignored)) {
    std::ifstream status(task.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 || line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
        total += std::atoll(line.c_str() + line.find(':') + 1);
      }
    }
  }
  return total;
}

/// The sum of one counter over all its labels in a /metrics text (Prometheus).
inline double metric_sum(const std::string& metrics, const std::string& name) {
  double total = 0;
  std::istringstream lines(metrics);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name, 0) != 0 || line.size() <= name.size()) continue;
    const char next = line[name.size()];
    if (next != '{' && next != ' ') continue;
    total += std::atof(line.c_str() + line.rfind(' ') + 1);
  }
  return total;
}

/// A line of /proc/PID/status ("VmHWM:", "VmRSS:") in MiB.
inline double status_mib(pid_t pid, const std::string& key) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(key.size())) / 1024.0;
  }
  return 0;
}

/// Peak resident set size of a live process, in MiB.
inline double peak_rss_mib(pid_t pid) { return status_mib(pid, "VmHWM:"); }
/// Resident set size of a live process now, in MiB.
inline double rss_mib(pid_t pid) { return status_mib(pid, "VmRSS:"); }

/// Disk space the files under `dir` take (allocated blocks, not apparent sizes), in MiB.
inline double disk_usage_mib(const std::filesystem::path& dir) {
  std::error_code failed;
  double bytes = 0;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, failed);
       !failed && it != std::filesystem::recursive_directory_iterator(); it.increment(failed)) {
    struct stat info {};
    if (it->is_regular_file(failed) && ::stat(it->path().c_str(), &info) == 0) {
      bytes += static_cast<double>(info.st_blocks) * 512.0;
    }
  }
  return bytes / (1024.0 * 1024.0);
}

inline double percentile(std::vector<double> values, double fraction) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[static_cast<std::size_t>(fraction * static_cast<double>(values.size() - 1))];
}

/// What every hello-cities orchestration returns.
inline json expected_output() {
  json out = json::array();
  for (const char* city : {"Tokyo", "Seattle", "London", "Paris", "Cairo"}) out.push_back(std::string("Hello, ") + city + "!");
  return out;
}

/// A native client of the dtsd at `address`, waiting up to 10 s for it to listen
/// (through TLS when DTSD_TLS_CA names a CA, as --secure sets it).
inline std::unique_ptr<sdk::client> connect(const std::string& address, const char* bench,
                                            const std::string& token = "") {
  sdk::tls_options tls;
  if (const char* ca = std::getenv("DTSD_TLS_CA")) tls.ca = ca;
  if (const char* name = std::getenv("DTSD_TLS_SERVER_NAME")) tls.server_name = name;
  for (int attempt = 0; attempt < 400; ++attempt) {
    if (auto made = sdk::client::connect(address, "default", token, tls)) return std::move(*made);
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  std::fprintf(stderr, "%s bench: cannot connect to %s\n", bench, address.c_str());
  std::exit(1);
}

/// dtsd and a hello-cities worker as the benchmarks run them: their options, and
/// the processes once started.
struct hello_cities_setup {
  std::string dtsd_path;
  std::string worker_path;
  std::string js_worker;
  std::string node_path = "node";
  std::string data_dir;
  std::string durability = "fsync";
  std::string worker_kind = "cpp";
  std::uint32_t partitions = 12;
  std::uint32_t worker_activities = 256;
  std::uint32_t worker_orchestrators = 1024;
  std::uint32_t worker_threads = 4;
  /// --secure: dtsd with --auth and TLS (gRPC, native API, dashboard); the client and the
  /// worker present a token (made with dtsctl), the JS worker trusts a test CA.
  bool secure = false;
  std::string dtsctl_path;
  std::string token;  ///< Set by start_server when secure.
  std::vector<std::string> dtsd_extra;  ///< More flags for dtsd.

  explicit hello_cities_setup(std::string default_data_dir) : data_dir(std::move(default_data_dir)) {
    auto self_dir = std::filesystem::read_symlink("/proc/self/exe").parent_path();
    dtsd_path = (self_dir / "../src/server/dtsd").string();
    dtsctl_path = (self_dir / "../src/cli/dtsctl").string();
    worker_path = (self_dir / "../samples/hello_cities/hello_cities").string();
    js_worker = (self_dir / "../../../tests/compat/worker.mjs").lexically_normal().string();
  }

  void add_options(CLI::App& app) {
    app.add_option("--worker-kind", worker_kind, "cpp (C++ SDK, native API) | js (official JS SDK, gRPC)")
        ->check(CLI::IsMember({"cpp", "js"}))
        ->capture_default_str();
    app.add_option("--node", node_path, "Node.js for the js worker")->capture_default_str();
    app.add_option("--js-worker", js_worker, "The JS worker script (needs tests/compat/node_modules: npm ci)")
        ->capture_default_str();
    app.add_option("--worker-activities", worker_activities, "Activities the C++ worker runs at once")
        ->check(CLI::Range(1u, 4096u))
        ->capture_default_str();
    app.add_option("--worker-orchestrators", worker_orchestrators, "Orchestrator work items the C++ worker takes at once")
        ->check(CLI::Range(1u, 4096u))
        ->capture_default_str();
    app.add_option("--worker-threads", worker_threads, "Threads of the C++ worker (0: one per activity slot)")
        ->capture_default_str();
    app.add_option("--partitions", partitions)->check(CLI::Range(1u, 1024u))->capture_default_str();
    app.add_option("--dtsd", dtsd_path)->capture_default_str();
    app.add_option("--worker", worker_path)->capture_default_str();
    app.add_option("--data-dir", data_dir, "Emptied first, removed afterwards")->capture_default_str();
    app.add_option("--durability", durability, "fsync | nosync | memory")
        ->check(CLI::IsMember({"fsync", "nosync", "memory"}))
        ->capture_default_str();
    app.add_flag("--secure", secure, "dtsd with --auth and TLS: every call carries a token; gRPC over TLS (test CA)");
    app.add_option("--dtsd-arg", dtsd_extra, "One more argument for dtsd (repeat; e.g. --dtsd-arg=--retention-default=1m)");
  }

  /// For --secure: a contributor token and a test CA with a certificate for
  /// 127.0.0.1, in the data dir; the arguments dtsd needs for them.
  std::vector<std::string> make_secrets() {
    const auto dir = std::filesystem::path(data_dir);
    std::filesystem::create_directories(dir / "tls");
    const auto tls = (dir / "tls").string();
    const auto made = std::system(
        ("(cd '" + tls + "' && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca"
         " && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost"
         " && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ext"
         " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2"
         " -extfile ext) > /dev/null 2>&1").c_str());
    if (made != 0) {
      std::fprintf(stderr, "bench: --secure needs openssl to make a test certificate\n");
      std::exit(1);
    }
    const auto command = "'" + dtsctl_path + "' --json token create --role contributor --task-hub '*' --auth-dir '" +
                         (dir / "auth").string() + "'";
    std::FILE* out = ::popen(command.c_str(), "r");
    std::string text;
    char buffer[512];
    while (out && std::fgets(buffer, sizeof buffer, out)) text += buffer;
    if (!out || ::pclose(out) != 0) {
      std::fprintf(stderr, "bench: --secure: dtsctl token create failed\n");
      std::exit(1);
    }
    token = json::parse(text).at("token").get<std::string>();
    ::setenv("DTSD_TOKEN", token.c_str(), 1);  // The workers read it.
    ::setenv("DTSD_TLS_CA", (dir / "tls" / "ca.pem").c_str(), 1);
    // The native API's TLS checks DNS names (kj-tls); the certificate says localhost.
    ::setenv("DTSD_TLS_SERVER_NAME", "localhost", 1);
    return {"--auth", "--auth-dir", (dir / "auth").string(), "--tls-cert", (dir / "tls" / "server.pem").string(),
            "--tls-key", (dir / "tls" / "server.key").string(),
            // The bench starts thousands at once: above the default rate limit per token.
            "--token-calls-per-second", "1000000"};
  }

  /// The running processes: dtsd on fresh loopback ports, then the worker.
  struct running {
    std::string address;       ///< Native API.
    std::string grpc_address;
    std::string dashboard_address;
    pid_t server = -1;
    pid_t worker = -1;
    /// Set while the run goes on: dtsd or the worker ending meanwhile ends the bench.
    std::shared_ptr<std::atomic<bool>> watching = std::make_shared<std::atomic<bool>>(false);
  };

  /// Starts dtsd on an emptied data dir (or, with `keep_data`, on what it holds);
  /// `start_worker` then starts the worker (after the caller has connected, so
  /// the worker finds dtsd listening).
  running start_server(bool keep_data = false) {
    if (!keep_data) std::filesystem::remove_all(data_dir);
    running r;
    r.address = "127.0.0.1:" + std::to_string(free_port());
    r.grpc_address = "127.0.0.1:" + std::to_string(free_port());
    r.dashboard_address = "127.0.0.1:" + std::to_string(free_port());
    std::vector<std::string> args = {"--data-dir", data_dir, "--listen", r.address, "--grpc-listen", r.grpc_address,
                                     "--dashboard-listen", r.dashboard_address,
                                     "--partitions", std::to_string(partitions), "--durability", durability,
                                     "--log-level", "warn"};
    if (secure) {
      auto more = make_secrets();
      args.insert(args.end(), more.begin(), more.end());
    }
    args.insert(args.end(), dtsd_extra.begin(), dtsd_extra.end());
    r.server = launch(dtsd_path, args);
    return r;
  }
  void start_worker(running& r) const {
    r.worker = worker_kind == "js"
                   ? launch(node_path, {js_worker, r.grpc_address})
                   : launch(worker_path, {"worker", "--address", r.address, "--activities",
                                          std::to_string(worker_activities), "--orchestrators",
                                          std::to_string(worker_orchestrators), "--threads",
                                          std::to_string(worker_threads)});
    watch(r);
  }

  /// A bench whose dtsd or worker dies would wait for its orchestrations forever:
  /// it stops with the reason instead.
  void watch(running& r) const {
    r.watching->store(true);
    std::thread([server = r.server, worker = r.worker, watching = r.watching, data = data_dir,
                 js = worker_kind == "js"] {
      while (watching->load()) {
        for (auto [pid, what] : {std::pair{server, "dtsd"}, std::pair{worker, "the worker"}}) {
          int status = 0;
          if (waitpid(pid, &status, WNOHANG) != pid || !watching->load()) continue;
          std::fprintf(stderr, "bench: %s exited (status %d) before the run ended%s\n", what, status,
                       js ? "; the JS worker needs tests/compat/node_modules (npm ci there)" : "");
          const auto other = pid == server ? worker : server;
          kill(other, SIGKILL);
          waitpid(other, &status, 0);
          std::error_code ignored;
          std::filesystem::remove_all(data, ignored);
          std::_Exit(1);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }).detach();
  }
  /// Stops the worker, then dtsd, and removes the data (unless `keep_data`).
  void stop_all(const running& r, bool keep_data = false) const {
    r.watching->store(false);
    stop(r.worker);
    stop(r.server);
    if (!keep_data) std::filesystem::remove_all(data_dir);
  }
};

}  // namespace dtsd::bench
