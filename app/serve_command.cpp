// `captioner serve`: captions over HTTP, for alt text in a CMS, a pipeline step or a person at a web
// page. A thin client of the library's CaptionService (decoder/pipeline/caption_service.h): each
// request's photos are decoded on its connection's thread, then encoded and captioned together with
// other requests' (dynamic batching, the stages overlapping), each request getting what
// `captioner caption` writes for the same photo and options. Admission is bounded: a request whose
// photos would pass --max-queue in flight is answered 503.
//
//   POST /v1/captions   one photo as the body (Content-Type image/*), or several as multipart/form-data
//                       ?beam=3&max_len=20&length_penalty=0.5&tag_confidence=0.5&subject_confidence=0.9
//                       within the bounds below
//   GET  /health  /metrics (Prometheus text)  /  (a page to drop photos on)
#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <memory>
#include <map>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <thread>

#include "app/cli_util.h"
#include "app/commands.h"
#include "decoder/bundle/install_paths.h"
#include "decoder/pipeline/caption_service.h"

namespace captioner::cli {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct ServeOptions {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8080;
  int max_body_mb = 20;  // per request; more is answered 413 before it is read
  int max_queue = 64;    // photos in flight; a request that would pass it is answered 503
  int batch = 32;        // photos captioned together at most
  // How long an encoded photo may wait for others to fill its batch. 0: none; photos that arrive
  // while a batch is being captioned form the next one. Measured (bench/RESULTS.md): 5 ms cost
  // one client 5 ms a photo and bought 32 clients no throughput.
  int batch_wait_ms = 0;
  int http_threads = 8;  // connections served at once
  int timeout_s = 10;    // reading a request or writing an answer
  int threads = 0;       // LibTorch threads (0: every usable core)
  bool quiet = false;
};

// Counters for /metrics, in Prometheus' text format.
class Metrics {
 public:
  void request(int status, double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++requests_[status];
    observe(latency_, kLatencyBounds, seconds);
  }
  void batch(size_t photos) {
    std::lock_guard<std::mutex> lock(mutex_);
    observe(batches_, kBatchBounds, static_cast<double>(photos));
  }
  void photo(bool captioned) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++(captioned ? captioned_ : failed_);
  }
  std::string text(size_t queue_depth) const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::string out =
        "# HELP captioner_requests_total HTTP requests answered, by status.\n# TYPE captioner_requests_total counter\n";
    for (const auto& [code, n] : requests_)
      out += "captioner_requests_total{code=\"" + std::to_string(code) + "\"} " + std::to_string(n) + "\n";
    out += "# HELP captioner_photos_total Photos answered, by result.\n# TYPE captioner_photos_total counter\n";
    out += "captioner_photos_total{result=\"captioned\"} " + std::to_string(captioned_) + "\n";
    out += "captioner_photos_total{result=\"failed\"} " + std::to_string(failed_) + "\n";
    out += "# HELP captioner_queue_depth Photos admitted and not yet answered.\n# TYPE captioner_queue_depth gauge\n";
    out += "captioner_queue_depth " + std::to_string(queue_depth) + "\n";
    out += histogram("captioner_request_seconds", "Time from a request's arrival to its answer.", latency_, kLatencyBounds);
    out += histogram("captioner_batch_photos", "Photos captioned together.", batches_, kBatchBounds);
    return out;
  }

 private:
  struct Histogram {
    std::vector<uint64_t> counts = std::vector<uint64_t>(16, 0);
    uint64_t count = 0;
    double sum = 0;
  };
  static constexpr double kLatencyBounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  static constexpr double kBatchBounds[] = {1, 2, 4, 8, 16, 32, 64, 128};

  template <size_t N>
  static void observe(Histogram& h, const double (&bounds)[N], double value) {
    for (size_t i = 0; i < N; ++i) h.counts[i] += value <= bounds[i];
    ++h.count;
    h.sum += value;
  }
  template <size_t N>
  static std::string histogram(const std::string& name, const std::string& help, const Histogram& h, const double (&bounds)[N]) {
    std::string out = "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
    for (size_t i = 0; i < N; ++i) {
      char le[32];
      std::snprintf(le, sizeof le, "%g", bounds[i]);
      out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(h.counts[i]) + "\n";
    }
    out += name + "_bucket{le=\"+Inf\"} " + std::to_string(h.count) + "\n";
    out += name + "_sum " + std::to_string(h.sum) + "\n" + name + "_count " + std::to_string(h.count) + "\n";
    return out;
  }

  mutable std::mutex mutex_;
  std::map<int, uint64_t> requests_;
  Histogram latency_, batches_;
  uint64_t captioned_ = 0, failed_ = 0;
};

// Photos admitted and not yet answered, at most `limit`: a request that would pass it is refused
// whole (503), so memory stays bounded however many clients there are.
class Admission {
 public:
  explicit Admission(size_t limit) : limit_(limit) {}
  size_t limit() const { return limit_; }
  bool admit(size_t photos) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (in_flight_ + photos > limit_) return false;
    in_flight_ += photos;
    return true;
  }
  void release(size_t photos) {
    std::lock_guard<std::mutex> lock(mutex_);
    in_flight_ -= photos;
  }
  size_t in_flight() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return in_flight_;
  }

 private:
  const size_t limit_;
  mutable std::mutex mutex_;
  size_t in_flight_ = 0;
};

// What a request runs on.
struct Serving {
  const ModelBundle& model;
  CaptionService& service;
  Admission& admission;
  Metrics& metrics;
};

json error_body(const std::string& message) { return json{{"error", message}}; }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n", "application/json");
}

// Decoding options from the query string, within safe bounds, over the model's; throws std::invalid_argument.
SearchOptions request_options(const httplib::Request& req, const SearchOptions& model_options) {
  SearchOverrides p;
  auto number = [&](const char* name, double lo, double hi) -> std::optional<double> {
    if (!req.has_param(name)) return std::nullopt;
    const std::string text = req.get_param_value(name);
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !(v >= lo && v <= hi)) {
      char range[64];
      std::snprintf(range, sizeof range, "%g to %g", lo, hi);
      throw std::invalid_argument(std::string(name) + "=" + text.substr(0, 32) + ": expected a number from " + range);
    }
    return v;
  };
  if (auto v = number("beam", 1, 8)) p.beam_size = static_cast<int>(*v);
  if (auto v = number("max_len", 1, 50)) p.max_length = static_cast<int>(*v);
  if (auto v = number("length_penalty", 0, 2)) p.length_penalty = *v;
  // tag_confidence, as the CLI's --tag-confidence; "tags", its old name, still works.
  if (auto v = number("tags", 0, 1)) p.tag_threshold = *v;
  if (auto v = number("tag_confidence", 0, 1)) p.tag_threshold = *v;
  if (auto v = number("subject_confidence", 0, 1)) p.subject_threshold = *v;
  for (const auto& [name, value] : req.params) {
    if (name != "beam" && name != "max_len" && name != "length_penalty" && name != "tag_confidence" && name != "tags" &&
        name != "subject_confidence") {
      throw std::invalid_argument("unknown option " + name.substr(0, 32) +
                                  " (beam, max_len, length_penalty, tag_confidence, subject_confidence)");
    }
  }
  return p.applied_to(model_options);
}

json result_json(const PhotoResult& r) {
  if (!r.captioned) return error_body(r.error);
  json j{{"caption", r.captioned->caption}, {"log_prob", r.captioned->log_prob}};
  if (r.captioned->tag) j["tag"] = r.captioned->tag->word;
  return j;
}

void handle_captions(const httplib::Request& req, httplib::Response& res, Serving& serving) {
  SearchOptions search;
  try {
    search = request_options(req, serving.model.search);
  } catch (const std::invalid_argument& e) {
    return send_json(res, 400, error_body(e.what()));
  }
  // Photos are named in errors by what the client called them; they are only ever bytes in
  // memory (PhotoInput::bytes is always set), never a path to open.
  std::vector<PhotoInput> photos;
  std::vector<std::string> names;
  const bool multipart = req.is_multipart_form_data();
  if (multipart) {
    for (const auto& [field, part] : req.files) {
      names.push_back((part.filename.empty() ? field : part.filename).substr(0, 200));
      photos.push_back(PhotoInput{names.back(), std::string_view(part.content)});
    }
    if (photos.empty()) return send_json(res, 400, error_body("the multipart request holds no file"));
  } else {
    const std::string type = req.get_header_value("Content-Type");
    if (type.rfind("image/", 0) != 0 && type.rfind("application/octet-stream", 0) != 0) {
      return send_json(res, 400,
                       error_body("send one photo as the body (Content-Type image/*) or several as multipart/form-data"));
    }
    if (req.body.empty()) return send_json(res, 400, error_body("the request has no photo (an empty body)"));
    photos.push_back(PhotoInput{"the photo", std::string_view(req.body)});
  }
  // More photos than may ever wait together: retrying cannot help, unlike a full queue.
  if (photos.size() > serving.admission.limit()) {
    return send_json(
        res, 413,
        error_body("the request holds " + std::to_string(photos.size()) + " photos; at most " +
                   std::to_string(serving.admission.limit()) + " may wait at once (--max-queue): send them in parts"));
  }
  if (!serving.admission.admit(photos.size())) {
    res.set_header("Retry-After", "1");
    return send_json(res, 503, error_body("too many photos waiting; try again in a moment"));
  }
  std::vector<PhotoResult> results;
  try {
    results = serving.service.caption(photos, search);
  } catch (...) {
    serving.admission.release(photos.size());
    throw;
  }
  serving.admission.release(photos.size());
  for (const auto& r : results) serving.metrics.photo(r.captioned.has_value());
  if (!multipart) return send_json(res, results[0].captioned ? 200 : 400, result_json(results[0]));
  json list = json::array();
  for (size_t i = 0; i < results.size(); ++i) {
    json j = result_json(results[i]);
    j["file_name"] = names[i];
    list.push_back(std::move(j));
  }
  send_json(res, 200, list);
}

// The page at `/`: drop photos, see each with its caption, copy it as alt text. Self-contained.
const char* kPage = R"PAGE(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>captioner</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
#drop{border:2px dashed #888;border-radius:12px;padding:2rem;text-align:center;cursor:pointer}
#drop.over{background:#eef5ff;border-color:#36c}
#photos{display:grid;grid-template-columns:repeat(auto-fill,minmax(16rem,1fr));gap:1rem;margin-top:1.5rem}
figure{margin:0;border:1px solid #ddd;border-radius:10px;overflow:hidden;background:#fafafa}
figure img{width:100%;height:12rem;object-fit:contain;background:#eee;display:block}
figcaption{padding:.6rem .8rem;overflow-wrap:break-word}
.caption{font-weight:600}.error{color:#b00}
button{margin-top:.4rem;font:inherit;padding:.2rem .7rem}
</style></head><body>
<h1>captioner</h1>
<div id="drop" tabindex="0">Drop photos here, or click to choose them<input id="files" type="file" accept="image/*" multiple hidden></div>
<div id="photos"></div>
<script>
const drop = document.getElementById('drop'), input = document.getElementById('files'), grid = document.getElementById('photos');
drop.onclick = () => input.click();
drop.ondragover = e => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = e => { e.preventDefault(); drop.classList.remove('over'); caption(e.dataTransfer.files); };
input.onchange = () => caption(input.files);
function caption(files) {
  for (const file of files) {
    const fig = document.createElement('figure'), img = document.createElement('img'), cap = document.createElement('figcaption');
    img.src = URL.createObjectURL(file);
    img.alt = '';
    cap.textContent = file.name + ': captioning...';
    fig.append(img, cap);
    grid.prepend(fig);
    fetch('/v1/captions', {method: 'POST', headers: {'Content-Type': file.type || 'application/octet-stream'}, body: file})
      .then(r => r.json())
      .then(j => {
        cap.textContent = '';
        if (j.error) { cap.className = 'error'; cap.textContent = j.error; return; }
        img.alt = j.caption;
        const text = document.createElement('div'), copy = document.createElement('button');
        text.className = 'caption';
        text.textContent = j.caption;
        copy.textContent = 'Copy alt text';
        copy.onclick = () => navigator.clipboard.writeText(j.caption).then(() => copy.textContent = 'Copied');
        cap.append(text, copy);
      })
      .catch(err => { cap.className = 'error'; cap.textContent = String(err); });
  }
}
</script></body></html>
)PAGE";

void run_serve(const ServeOptions& o) {
  const ModelBundle model =
      ModelBundle::load(o.model.empty() ? default_model_dir() : std::filesystem::path(o.model), torch::kCPU);
  Encoder encoder = Encoder::load(model.encoder_file, torch::kCPU);
  Metrics metrics;
  Admission admission(static_cast<size_t>(o.max_queue));
  CaptionServiceOptions so;
  so.max_batch = o.batch;
  so.batch_wait_ms = o.batch_wait_ms;
  so.threads = ThreadPlan::choose(o.threads);
  so.on_batch = [&metrics](size_t photos) { metrics.batch(photos); };
  CaptionService service(model, encoder, so);
  Serving serving{model, service, admission, metrics};

  httplib::Server server;
  server.new_task_queue = [n = o.http_threads] { return new httplib::ThreadPool(static_cast<size_t>(n)); };
  server.set_payload_max_length(static_cast<size_t>(o.max_body_mb) << 20);
  server.set_read_timeout(o.timeout_s, 0);
  server.set_write_timeout(o.timeout_s, 0);
  server.set_keep_alive_timeout(5);
  server.set_keep_alive_max_count(100);
  server.Post("/v1/captions", [&](const httplib::Request& req, httplib::Response& res) {
    const auto t0 = Clock::now();  // the body is read by now: this is the time to an answer
    handle_captions(req, res, serving);
    metrics.request(res.status, std::chrono::duration<double>(Clock::now() - t0).count());
  });
  server.Get("/health", [&](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, json{{"status", "ok"}, {"queue", admission.in_flight()}});
  });
  server.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.text(admission.in_flight()), "text/plain; version=0.0.4");
  });
  server.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(kPage, "text/html; charset=utf-8"); });
  // Every answer that is an error carries a one-line JSON body (413, 404, 405 included).
  server.set_error_handler([&](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 413 && req.path == "/v1/captions") metrics.request(413, 0);
    const std::string why = res.status == 413   ? "the request is larger than --max-body"
                            : res.status == 404 ? "no such endpoint (POST /v1/captions, GET /health, /metrics, /)"
                            : res.status == 405 ? "method not allowed here"
                                                : "HTTP " + std::to_string(res.status);
    send_json(res, res.status, error_body(why));
  });
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_json(res, 500, error_body("internal error"));
  });
  // Debian's cpp-httplib is compiled with a listen backlog of 5: a burst of more new connections
  // than that is dropped and each client retries after a second (p99 1.2 s at 32 clients). The
  // socket is noted as it is made and given the system's backlog once bound.
  int listening_socket = -1;
  server.set_socket_options([&listening_socket](socket_t sock) {
    httplib::default_socket_options(sock);
    listening_socket = sock;
  });
  const int port = o.port == 0 ? server.bind_to_any_port(o.host) : (server.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port < 0) {
    throw std::runtime_error("cannot listen on " + o.host + ":" + std::to_string(o.port) +
                             " (in use, or not an address of this machine); choose another --port or --host");
  }
  if (listening_socket >= 0) ::listen(listening_socket, SOMAXCONN);
  // SIGINT/SIGTERM: stop accepting, answer what was accepted, exit 0.
  install_stop_handlers();
  std::atomic<bool> listening_ended{false};
  std::thread watcher([&] {
    while (!stop_requested() && !listening_ended) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    // stop() does nothing before the accept loop has started: repeat until it has ended.
    while (!listening_ended) {
      server.stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  // An IPv6 address goes in brackets in a URL.
  const std::string host = o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host;
  std::cerr << "listening on http://" << host << ":" << port << " (POST /v1/captions; Ctrl-C stops)" << std::endl;
  server.listen_after_bind();
  listening_ended = true;
  watcher.join();  // every accepted request has been answered: the service is idle
  if (!o.quiet) std::cerr << "stopped\n";
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "Caption photos over HTTP (POST /v1/captions; a page to drop photos on at /)");
  cmd->option_defaults()->always_capture_default();
  cmd->add_option("--model", o->model, "Model directory (default: $CAPTIONER_MODEL, else the installed default)");
  cmd->add_option("--host", o->host, "Address to listen on (127.0.0.1: this machine only)")
      ->check(CLI::Validator([](std::string& h) { return h.empty() ? std::string("an empty address") : std::string(); }, "", ""));
  cmd->add_option("--port", o->port, "TCP port (0: any free one, printed at start)")->check(CLI::Range(0, 65535));
  cmd->add_option("--max-body", o->max_body_mb, "Largest request in MiB (larger: 413)")->check(CLI::Range(1, 1024));
  cmd->add_option("--max-queue", o->max_queue, "Photos in flight at once (more: 503 with Retry-After)")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--batch", o->batch, "Photos captioned together")->check(CLI::Range(1, 256));
  cmd->add_option("--batch-wait-ms", o->batch_wait_ms,
                  "How long an encoded photo may wait for others to fill its batch (0: not at all)")
      ->check(CLI::Range(0, 1000));
  cmd->add_option("--http-threads", o->http_threads, "Connections served at once")->check(CLI::Range(1, 1024));
  cmd->add_option("--timeout", o->timeout_s, "Seconds to read a request or write an answer")->check(CLI::Range(1, 3600));
  cmd->add_option("--threads", o->threads, "LibTorch threads (0: every usable core)")->check(CLI::Range(0, 256));
  cmd->add_flag("--quiet,-q", o->quiet, "No closing line");
  cmd->callback([o] { run_serve(*o); });
}

}  // namespace captioner::cli
