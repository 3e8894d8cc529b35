// `captioner serve` (issue 30) as clients meet it: concurrent clients get the CLI's captions,
// dynamic batching happens, every limit answers in one JSON line (413, 400, 404, 503 with
// Retry-After, stalled clients cut off), garbage leaves it healthy, SIGTERM drains and exits 0.
// A tiny model, so no ../shared is needed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <optional>
#include <regex>
#include <thread>

#include "datasets/file_io.h"
#include "tests/model_fixtures.h"
#include "tests/test_util.h"

using namespace captioner;
using namespace captioner::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Fixture {
  TempDir tmp;
  fs::path model, photos;
  std::vector<std::string> jpegs;  // bytes of photos/N.jpg
  Fixture() {
    make_bundle(make_tiny_encoder(tmp / "encoders"), make_vocab({"a", "dog", "cat", "red", "blue", "runs", "on", "grass"}))
        .save(tmp / "model");
    model = tmp / "model";
    photos = tmp / "photos";
    fs::create_directories(photos);
    std::mt19937 rng(3);
    for (int i = 0; i < 12; ++i) {
      cv::Mat img(48, 64, CV_8UC3, cv::Scalar(rng() % 256, rng() % 256, rng() % 256));
      std::vector<uchar> buf;
      cv::imencode(".jpg", img, buf);
      jpegs.emplace_back(buf.begin(), buf.end());
      write_text(photos / (std::to_string(i) + ".jpg"), jpegs.back());
    }
  }
  // The CLI's caption of each photo, by index.
  std::vector<std::string> cli_captions() const {
    auto r = run_cli("caption " + photos.string() + " --model " + model.string() + " --format jsonl -q");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<std::string> out(jpegs.size());
    for (const auto& line : lines(r.out)) {
      if (line.empty()) continue;
      const json j = json::parse(line);
      out[std::stoul(fs::path(j["file_name"].get<std::string>()).stem().string())] = j["caption"];
    }
    return out;
  }
};

// `captioner serve` in a child process on a free port.
class Server {
 public:
  Server(const Fixture& f, const std::string& extra) : log_(f.tmp / ("serve-" + std::to_string(count_++) + ".log")) {
    pid_ = fork();
    if (pid_ == 0) {
      FILE* err = std::freopen(log_.c_str(), "w", stderr);
      (void)err;
      const std::string cmd =
          std::string("exec '") + CAPTIONER_BINARY + "' serve --port 0 --model '" + f.model.string() + "' " + extra;
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    static const std::regex kListening(R"(listening on http://127\.0\.0\.1:(\d+))");
    for (int i = 0; i < 600 && port_ == 0; ++i) {
      std::smatch m;
      std::string text;
      try {
        text = read_file(log_);
      } catch (const std::exception&) {
      }
      if (std::regex_search(text, m, kListening)) port_ = std::stoi(m[1].str());
      if (port_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~Server() {
    if (pid_ > 0 && !waited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string log() const { return read_file(log_); }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(30, 0);
    return c;
  }
  int wait_exit() {
    int status = 0;
    waitpid(pid_, &status, 0);
    waited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  static inline int count_ = 0;
  fs::path log_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool waited_ = false;
};

// A plain TCP connection to the server (for what no HTTP client would send); -1 when refused.
int raw_connect(int port, int attempts = 1) {
  for (int i = 0; i < attempts; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
    close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

void expect_one_line_json_error(const httplib::Result& r, int status, const std::string& fragment) {
  ASSERT_TRUE(r) << "no answer";
  EXPECT_EQ(r->status, status) << r->body;
  EXPECT_EQ(r->body.find('\n'), r->body.size() - 1) << "one line: " << r->body;
  const json j = json::parse(r->body);
  EXPECT_NE(j.value("error", "").find(fragment), std::string::npos) << r->body;
}

}  // namespace

TEST(ServeCli, ConcurrentClientsGetTheCliCaptionsInSharedBatches) {
  Fixture f;
  const auto expected = f.cli_captions();
  Server server(f, "--batch 8 --batch-wait-ms 30");
  ASSERT_GT(server.port(), 0) << server.log();
  std::atomic<int> wrong{0}, answered{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      auto client = server.client();
      for (int k = 0; k < 3; ++k) {
        const size_t i = static_cast<size_t>(c + 8 * k) % f.jpegs.size();
        auto r = client.Post("/v1/captions", f.jpegs[i], "image/jpeg");
        if (!r || r->status != 200 || json::parse(r->body)["caption"] != expected[i]) {
          ++wrong;
        } else {
          ++answered;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(answered, 24);
  // Several photos in one multipart request: a list, in order, named.
  httplib::MultipartFormDataItems items;
  for (int i = 0; i < 3; ++i)
    items.push_back({"photo", f.jpegs[static_cast<size_t>(i)], std::to_string(i) + ".jpg", "image/jpeg"});
  items.push_back({"photo", "not a photo", "notes.txt", "text/plain"});
  auto r = server.client().Post("/v1/captions", items);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json list = json::parse(r->body);
  ASSERT_EQ(list.size(), 4u) << r->body;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(list[i]["caption"], expected[i]) << r->body;
    EXPECT_EQ(list[i]["file_name"], std::to_string(i) + ".jpg");
    EXPECT_TRUE(list[i]["log_prob"].is_number());
  }
  EXPECT_NE(list[3]["error"].get<std::string>().find("not an image"), std::string::npos) << r->body;
  // Requests from different clients were captioned together.
  r = server.client().Get("/metrics");
  ASSERT_TRUE(r);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      r->body, m, std::regex(R"(captioner_batch_photos_bucket\{le="1"\} (\d+)\ncaptioner_batch_photos_bucket\{le="2"\} (\d+))")))
      << r->body;
  const std::string count = std::regex_search(r->body, m, std::regex(R"(captioner_batch_photos_count (\d+))")) ? m[1].str() : "0";
  std::smatch one;
  std::regex_search(r->body, one, std::regex(R"(captioner_batch_photos_bucket\{le="1"\} (\d+))"));
  EXPECT_LT(std::stoi(one[1].str()), std::stoi(count)) << "no batch held more than one photo:\n" << r->body;
  EXPECT_NE(r->body.find("captioner_requests_total{code=\"200\"} 25"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("captioner_queue_depth 0"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("captioner_request_seconds_bucket{le=\"+Inf\"} 25"), std::string::npos) << r->body;
  // The page is there, and names the endpoint it posts to.
  r = server.client().Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("/v1/captions"), std::string::npos);
  EXPECT_NE(r->body.find("Copy alt text"), std::string::npos);
}

TEST(ServeCli, EveryLimitIsAnsweredInOneJsonLine) {
  Fixture f;
  Server server(f, "--max-body 1 --max-queue 2 --batch 1 --batch-wait-ms 200 --timeout 1 --http-threads 32");
  ASSERT_GT(server.port(), 0) << server.log();
  auto client = server.client();
  // Larger than --max-body: 413, answered from the headers before the body is read.
  {
    const int fd = raw_connect(server.port(), 50);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    const std::string head =
        "POST /v1/captions HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 2097152\r\n\r\n";
    ASSERT_EQ(send(fd, head.data(), head.size(), 0), static_cast<ssize_t>(head.size()));
    timeval wait{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    // The head and the body may come in separate segments (a loaded machine): read until the
    // body's Content-Length has arrived, the server closes, or 5 s pass.
    std::string answer;
    char buf[4096];
    for (;;) {
      const ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      answer.append(buf, static_cast<size_t>(n));
      const size_t head_end = answer.find("\r\n\r\n"), length_at = answer.find("Content-Length: ");
      if (head_end != std::string::npos && length_at != std::string::npos &&
          answer.size() >= head_end + 4 + std::stoul(answer.substr(length_at + 16)))
        break;
    }
    close(fd);
    ASSERT_FALSE(answer.empty()) << "no answer to an oversized request";
    EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer;
    EXPECT_NE(answer.find("{\"error\":\"the request is larger than --max-body\"}"), std::string::npos) << answer;
  }
  expect_one_line_json_error(client.Post("/v1/captions", "hello", "text/plain"), 400, "Content-Type image/*");
  expect_one_line_json_error(client.Post("/v1/captions", "garbage bytes", "image/jpeg"), 400, "not an image");
  expect_one_line_json_error(client.Post("/v1/captions?beam=100", f.jpegs[0], "image/jpeg"), 400, "beam=100");
  expect_one_line_json_error(client.Post("/v1/captions?file=/etc/passwd", f.jpegs[0], "image/jpeg"), 400, "unknown option file");
  expect_one_line_json_error(client.Get("/etc/passwd"), 404, "no such endpoint");
  // More photos in one request than may ever wait together: 413 (a retry could never succeed).
  httplib::MultipartFormDataItems items;
  for (int i = 0; i < 3; ++i) items.push_back({"photo", f.jpegs[static_cast<size_t>(i)], "p.jpg", "image/jpeg"});
  auto r = client.Post("/v1/captions", items);
  expect_one_line_json_error(r, 413, "at most 2 may wait at once");
  {
    // A queue that others fill: 503 with Retry-After, nothing half-done. One photo waits there
    // for its batch to fill (--batch-wait-ms 1000) while two more ask to join it.
    Server waiting(f, "--max-queue 2 --batch 8 --batch-wait-ms 1000");
    ASSERT_GT(waiting.port(), 0) << waiting.log();
    std::thread first([&] { EXPECT_EQ(waiting.client().Post("/v1/captions", f.jpegs[0], "image/jpeg")->status, 200); });
    for (int i = 0; i < 100; ++i) {
      auto m = waiting.client().Get("/metrics");
      if (m && m->body.find("captioner_queue_depth 1") != std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    httplib::MultipartFormDataItems two(items.begin(), items.begin() + 2);
    auto full = waiting.client().Post("/v1/captions", two);
    expect_one_line_json_error(full, 503, "too many photos waiting");
    EXPECT_EQ(full->get_header_value("Retry-After"), "1");
    first.join();
  }
  // A client that stalls half way through its headers is cut off after --timeout.
  const int fd = raw_connect(server.port(), 50);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  const std::string partial = "POST /v1/captions HTTP/1.1\r\nHost: x\r\n";
  ASSERT_EQ(send(fd, partial.data(), partial.size(), 0), static_cast<ssize_t>(partial.size()));
  timeval wait{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
  const auto t0 = std::chrono::steady_clock::now();
  char buf[256];
  const ssize_t n = recv(fd, buf, sizeof buf, 0);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  close(fd);
  // Closed, or told it timed out (4xx), within about --timeout: never left hanging.
  EXPECT_TRUE(n <= 0 || std::string(buf, 10).rfind("HTTP/1.1 4", 0) == 0)
      << std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0)));
  EXPECT_LT(waited, 4.5) << "the stalled connection was kept open";
  // Garbage requests (eight clients at once) leave it healthy. 400 rather than thousands: each costs
  // ~0.1 s of wall time here (Debian's cpp-httplib listens with a backlog of 5).
  const auto garbage_start = std::chrono::steady_clock::now();
  std::vector<std::thread> senders;
  for (int t = 0; t < 8; ++t) {
    senders.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(7 + t));
      for (int i = 0; i < 50; ++i) {
        const int g = raw_connect(server.port());
        if (g < 0) continue;
        std::string junk(static_cast<size_t>(rng() % 300), '\0');
        for (auto& c : junk) c = static_cast<char>(rng());
        if (i % 3 == 0) junk = "GET /" + junk + " HTTP/1.1\r\n\r\n";
        ssize_t sent = send(g, junk.data(), junk.size(), MSG_NOSIGNAL);
        (void)sent;
        close(g);
      }
    });
  }
  for (auto& t : senders) t.join();
  std::cerr << "400 garbage requests: " << std::chrono::duration<double>(std::chrono::steady_clock::now() - garbage_start).count()
            << " s\n";
  r = client.Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["status"], "ok");
  r = client.Post("/v1/captions", f.jpegs[1], "image/jpeg");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST(ServeCli, SigtermAnswersWhatWasAcceptedAndExitsZero) {
  Fixture f;
  // Photos wait up to 1 s for their batch: SIGTERM comes while they are queued (all six on a
  // quiet machine; on a loaded one, the first batch may already have gone).
  Server server(f, "--batch 64 --batch-wait-ms 1000 --http-threads 8");
  ASSERT_GT(server.port(), 0) << server.log();
  std::atomic<int> ok{0}, other{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      auto r = server.client().Post("/v1/captions", f.jpegs[static_cast<size_t>(c)], "image/jpeg");
      (r && r->status == 200 ? ok : other)++;
    });
  }
  // One connection for all the polling: a new one each time would tie up a server thread apiece.
  auto poller = server.client();
  int depth = 0;  // photos waiting when SIGTERM is sent
  static const std::regex kDepth(R"(captioner_queue_depth (\d+))");
  // SIGTERM once all six wait, or, on a machine too loaded for that, half a batch-wait after the
  // first was seen waiting (the batch leaves 1 s after its first photo came).
  std::optional<std::chrono::steady_clock::time_point> first_seen;
  for (int i = 0; i < 300 && depth < 6; ++i) {
    auto m = poller.Get("/metrics");
    std::smatch match;
    depth = m && std::regex_search(m->body, match, kDepth) ? std::stoi(match[1].str()) : 0;
    if (depth > 0 && !first_seen) first_seen = std::chrono::steady_clock::now();
    if (first_seen && std::chrono::steady_clock::now() - *first_seen > std::chrono::milliseconds(500)) break;
    if (depth < 6) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // Whatever happened, the clients are joined before any ASSERT returns: a joinable thread left
  // behind would abort the test process and orphan the server (ctest then waits on its pipes).
  kill(server.pid(), SIGTERM);
  for (auto& t : clients) t.join();
  EXPECT_EQ(server.wait_exit(), 0) << server.log();
  // Every photo that was waiting is answered; on a quiet machine that is all six.
  EXPECT_GE(ok, depth) << "accepted requests must be answered before the server exits";
  EXPECT_GT(depth, 0) << "no photo was waiting when SIGTERM came";
  EXPECT_EQ(ok + other, 6);
  EXPECT_EQ(raw_connect(server.port()), -1) << "still accepting after SIGTERM";
}

namespace {
// A page in headless Chromium driven over the DevTools protocol (CDP), as Puppeteer drives one:
// a WebSocket to the page's target, JSON calls answered by id. Only what the test needs: text
// frames, unmasked replies, one call at a time.
class DevToolsPage {
 public:
  DevToolsPage(const fs::path& profile, const std::string& url) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      const int quiet = ::open((profile.string() + ".log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);  // dbus noise
      if (quiet >= 0) ::dup2(quiet, STDERR_FILENO), ::dup2(quiet, STDOUT_FILENO);
      const std::string dir = "--user-data-dir=" + profile.string();
      ::execl(kChromiumBinary, kChromiumBinary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", "--remote-debugging-port=0",
              dir.c_str(), url.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Chromium writes the port it chose to DevToolsActivePort in the profile folder.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    int port = 0;
    while (port == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::ifstream in(profile / "DevToolsActivePort");
      if (!(in >> port)) port = 0;
    }
    if (port == 0) throw std::runtime_error("chromium did not open its DevTools port");
    std::string path;
    while (path.empty() && std::chrono::steady_clock::now() < deadline) {
      httplib::Client http("127.0.0.1", port);
      if (auto r = http.Get("/json/list")) {
        for (const auto& t : json::parse(r->body)) {
          if (t.value("type", "") == "page") path = t["webSocketDebuggerUrl"].get<std::string>();
        }
      }
      if (path.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (path.empty()) throw std::runtime_error("chromium shows no page target");
    path = path.substr(path.find('/', std::string("ws://").size()));
    connect_websocket(port, path);
  }
  ~DevToolsPage() {
    if (fd_ >= 0) ::close(fd_);
    if (pid_ > 0) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  json call(const std::string& method, const json& params = json::object()) {
    const int id = ++last_id_;
    send_text(json{{"id", id}, {"method", method}, {"params", params}}.dump());
    while (true) {
      json reply = json::parse(receive_text());
      if (reply.value("id", 0) == id) {
        if (reply.contains("error")) throw std::runtime_error(method + ": " + reply["error"].dump());
        return reply["result"];
      }
    }
  }
  // A JavaScript expression's value in the page.
  json evaluate(const std::string& expression) {
    return call("Runtime.evaluate", {{"expression", expression}, {"returnByValue", true}})["result"].value("value", json());
  }

 private:
  static constexpr const char* kChromiumBinary = "/usr/bin/chromium";

  void connect_websocket(int port, const std::string& path) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{30, 0};  // no reply within 30 s is a failure, not a hang
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("cannot reach DevTools");
    write_all("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
              "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              "Sec-WebSocket-Version: 13\r\n\r\n");
    std::string head;
    while (head.find("\r\n\r\n") == std::string::npos) head += read_exact(1);
    if (head.find(" 101 ") == std::string::npos) throw std::runtime_error("DevTools refused the WebSocket: " + head);
  }
  void write_all(const std::string& bytes) {
    for (size_t at = 0; at < bytes.size();) {
      const ssize_t n = ::send(fd_, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("DevTools connection lost");
      at += static_cast<size_t>(n);
    }
  }
  std::string read_exact(size_t n) {
    std::string out(n, '\0');
    for (size_t at = 0; at < n;) {
      const ssize_t got = ::recv(fd_, out.data() + at, n - at, 0);
      if (got <= 0) throw std::runtime_error("DevTools connection lost or silent for 30 s");
      at += static_cast<size_t>(got);
    }
    return out;
  }
  // A client's frames are masked; a zero mask leaves the payload as it is.
  void send_text(const std::string& text) {
    std::string frame = "\x81";
    const uint64_t n = text.size();
    if (n < 126) {
      frame += static_cast<char>(0x80 | n);
    } else if (n < 65536) {
      frame += static_cast<char>(0x80 | 126);
      frame += {static_cast<char>(n >> 8), static_cast<char>(n)};
    } else {
      frame += static_cast<char>(0x80 | 127);
      for (int shift = 56; shift >= 0; shift -= 8) frame += static_cast<char>(n >> shift);
    }
    frame += std::string(4, '\0');
    write_all(frame + text);
  }
  std::string receive_text() {
    std::string message;
    while (true) {
      const std::string head = read_exact(2);
      const bool fin = (head[0] & 0x80) != 0;
      uint64_t n = static_cast<unsigned char>(head[1]) & 0x7f;
      if (n >= 126) {
        const std::string ext = read_exact(n == 126 ? 2 : 8);
        n = 0;
        for (unsigned char c : ext) n = (n << 8) | c;
      }
      message += read_exact(static_cast<size_t>(n));
      if (fin) return message;
    }
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  int last_id_ = 0;
};
}  // namespace

// The page at `/` in headless Chromium: a photo chosen in its file input (DOM.setFileInputFiles,
// what a person's file chooser does) is uploaded by the page's own script, and its card shows the
// CLI's caption, as the image's alt text too, with the copy button.
TEST(ServeCli, ThePageCaptionsARealUploadInHeadlessChromium) {
  if (!fs::exists("/usr/bin/chromium")) GTEST_SKIP() << "/usr/bin/chromium not installed (scripts/setup.sh installs it)";
  Fixture f;
  const auto expected = f.cli_captions();
  Server server(f, "");
  ASSERT_GT(server.port(), 0) << server.log();
  DevToolsPage page(f.tmp / "profile", "http://127.0.0.1:" + std::to_string(server.port()) + "/");
  // Until the served page (not the first about:blank) has loaded.
  for (int i = 0; i < 300 && page.evaluate("document.readyState == 'complete' && !!document.getElementById('files')") != true;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const int root = page.call("DOM.getDocument")["root"]["nodeId"];
  const int input = page.call("DOM.querySelector", {{"nodeId", root}, {"selector", "#files"}})["nodeId"];
  ASSERT_GT(input, 0);
  page.call("DOM.setFileInputFiles", {{"nodeId", input}, {"files", {(f.photos / "3.jpg").string()}}});
  // Chromium fires `change` for files set this way; a browser that did not would need the event.
  if (page.evaluate("document.querySelectorAll('figure').length") == 0) {
    page.evaluate("document.getElementById('files').dispatchEvent(new Event('change'))");
  }
  json shown;
  for (int i = 0; i < 300; ++i) {
    shown = page.evaluate(
        "[...document.querySelectorAll('figure')].map(f => ({caption: (f.querySelector('.caption') || {}).textContent, "
        "alt: f.querySelector('img').alt, button: (f.querySelector('button') || {}).textContent}))");
    if (shown.is_array() && !shown.empty() && shown[0]["caption"].is_string()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(shown.is_array() && shown.size() == 1) << shown.dump() << server.log();
  EXPECT_EQ(shown[0]["caption"], expected[3]) << shown.dump();
  EXPECT_EQ(shown[0]["alt"], expected[3]) << shown.dump();
  EXPECT_EQ(shown[0]["button"], "Copy alt text") << shown.dump();
  // The upload went through the server like any client's.
  auto metrics = server.client().Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("captioner_requests_total{code=\"200\"} 1"), std::string::npos) << metrics->body;
}
