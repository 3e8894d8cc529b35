// `captioner serve`: captions over HTTP, for alt text in a CMS, a pipeline step or a person at a web
// page. A thin client of the C API (include/captioner/captioner.h): photos from many requests wait
// in one bounded queue and are captioned together (dynamic batching), each request getting what
// `captioner caption` writes for the same photo and options.
//
//   POST /v1/captions   one photo as the body (Content-Type image/*), or several as multipart/form-data
//                       ?beam=3&max_len=20&length_penalty=0.5&tag_confidence=0.5 within the bounds below
//   GET  /health  /metrics (Prometheus text)  /  (a page to drop photos on)
#include <captioner/captioner.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <iostream>
#include <memory>
#include <map>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <thread>

#include "app/cli_util.h"
#include "app/commands.h"

namespace captioner::cli {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct ServeOptions {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8080;
  int max_body_mb = 20;   // per request; more is answered 413 before it is read
  int max_queue = 64;     // photos waiting; a request that would pass it is answered 503
  int batch = 16;         // photos captioned together
  int batch_wait_ms = 5;  // after the first photo arrives, wait this long for others to join it
  int http_threads = 8;   // connections served at once
  int timeout_s = 10;     // reading a request or writing an answer
  int threads = 0;        // LibTorch threads (0: every usable core)
  bool quiet = false;
};

// What one photo came to.
struct Outcome {
  bool ok = false;
  std::string caption, tag, error;
  double log_prob = 0;
};

bool same_options(const captioner_params& a, const captioner_params& b) {
  return a.beam_size == b.beam_size && a.max_length == b.max_length && a.length_penalty == b.length_penalty &&
         a.tag_threshold == b.tag_threshold;
}

// Counters for /metrics, in Prometheus' text format.
class Metrics {
 public:
  void request(int status, double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++requests_[status];
    observe(latency_, kLatencyBounds, seconds);
  }
  void batch(size_t photos, size_t failed) {
    std::lock_guard<std::mutex> lock(mutex_);
    observe(batches_, kBatchBounds, static_cast<double>(photos));
    captioned_ += photos - failed;
    failed_ += failed;
  }
  std::string text(size_t queue_depth) const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::string out =
        "# HELP captioner_requests_total HTTP requests answered, by status.\n# TYPE captioner_requests_total counter\n";
    for (const auto& [code, n] : requests_)
      out += "captioner_requests_total{code=\"" + std::to_string(code) + "\"} " + std::to_string(n) + "\n";
    out += "# HELP captioner_photos_total Photos taken from the queue, by result.\n# TYPE captioner_photos_total counter\n";
    out += "captioner_photos_total{result=\"captioned\"} " + std::to_string(captioned_) + "\n";
    out += "captioner_photos_total{result=\"failed\"} " + std::to_string(failed_) + "\n";
    out += "# HELP captioner_queue_depth Photos waiting to be captioned.\n# TYPE captioner_queue_depth gauge\n";
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

// One bounded queue of photos from every request; a worker captions them in batches of photos that
// share decoding options, waiting up to `wait` after the first for others to join.
class Batcher {
 public:
  Batcher(captioner_model* model, const ServeOptions& o, Metrics& metrics)
      : model_(model),
        max_queue_(static_cast<size_t>(o.max_queue)),
        batch_(static_cast<size_t>(o.batch)),
        wait_(o.batch_wait_ms),
        metrics_(metrics),
        worker_([this] { work(); }) {}
  ~Batcher() { finish(); }

  size_t max_queue() const { return max_queue_; }
  // All of a request's photos, or none when the queue cannot take them (the caller answers 503).
  std::optional<std::vector<std::future<Outcome>>> submit(std::vector<std::string> photos, const captioner_params& params) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ || queue_.size() + photos.size() > max_queue_) return std::nullopt;
    std::vector<std::future<Outcome>> out;
    for (auto& p : photos) {
      queue_.push_back(Job{std::move(p), params, {}});
      out.push_back(queue_.back().done.get_future());
    }
    ready_.notify_one();
    return out;
  }
  size_t depth() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.size();
  }
  // Captions what is queued, then stops the worker.
  void finish() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_one();
    if (worker_.joinable()) worker_.join();
  }

 private:
  struct Job {
    std::string photo;
    captioner_params params;
    std::promise<Outcome> done;
  };

  void work() {
    for (;;) {
      std::vector<Job> batch;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        ready_.wait_until(lock, Clock::now() + wait_, [&] { return stopping_ || queue_.size() >= batch_; });
        const captioner_params params = queue_.front().params;
        for (auto it = queue_.begin(); it != queue_.end() && batch.size() < batch_;) {
          if (same_options(it->params, params)) {
            batch.push_back(std::move(*it));
            it = queue_.erase(it);
          } else {
            ++it;
          }
        }
      }
      caption(batch);
    }
  }

  void caption(std::vector<Job>& batch) {
    std::vector<const void*> data;
    std::vector<size_t> sizes;
    for (const auto& j : batch) {
      data.push_back(j.photo.data());
      sizes.push_back(j.photo.size());
    }
    std::vector<captioner_result> results(batch.size());
    const int done =
        captioner_caption_images_with(model_, &batch.front().params, data.data(), sizes.data(), batch.size(), results.data());
    const std::string call_error = done < 0 ? captioner_last_error() : "";
    size_t failed = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      Outcome o;
      const captioner_result& r = results[i];
      if (done >= 0 && r.caption) {
        o.ok = true;
        o.caption = r.caption;
        o.log_prob = r.log_prob;
        if (r.tag) o.tag = r.tag;
      } else {
        ++failed;
        o.error = done < 0 ? call_error : r.error ? r.error : "not captioned";
        // The library names photos in memory "(image k in memory)": say "the photo" to the client.
        const size_t colon = o.error.find("in memory): ");
        if (colon != std::string::npos) o.error = "the photo: " + o.error.substr(colon + 12);
      }
      if (done >= 0) captioner_result_clear(&results[i]);
      batch[i].done.set_value(std::move(o));
    }
    metrics_.batch(batch.size(), failed);
  }

  captioner_model* model_;
  const size_t max_queue_, batch_;
  const std::chrono::milliseconds wait_;
  Metrics& metrics_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::thread worker_;  // last: starts once everything above is ready
};

json error_body(const std::string& message) { return json{{"error", message}}; }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n", "application/json");
}

// Decoding options from the query string, within safe bounds; throws std::invalid_argument.
captioner_params request_options(const httplib::Request& req) {
  captioner_params p = captioner_default_params();
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
  for (const auto& [name, value] : req.params) {
    if (name != "beam" && name != "max_len" && name != "length_penalty" && name != "tag_confidence" && name != "tags") {
      throw std::invalid_argument("unknown option " + name.substr(0, 32) + " (beam, max_len, length_penalty, tag_confidence)");
    }
  }
  return p;
}

json outcome_json(const Outcome& o) {
  if (!o.ok) return error_body(o.error);
  json j{{"caption", o.caption}, {"log_prob", o.log_prob}};
  if (!o.tag.empty()) j["tag"] = o.tag;
  return j;
}

void handle_captions(const httplib::Request& req, httplib::Response& res, Batcher& batcher) {
  captioner_params params;
  try {
    params = request_options(req);
  } catch (const std::invalid_argument& e) {
    return send_json(res, 400, error_body(e.what()));
  }
  std::vector<std::string> photos, names;
  const bool multipart = req.is_multipart_form_data();
  if (multipart) {
    for (const auto& [field, part] : req.files) {
      photos.push_back(part.content);
      names.push_back(part.filename.empty() ? field : part.filename);
    }
    if (photos.empty()) return send_json(res, 400, error_body("the multipart request holds no file"));
  } else {
    const std::string type = req.get_header_value("Content-Type");
    if (type.rfind("image/", 0) != 0 && type.rfind("application/octet-stream", 0) != 0) {
      return send_json(res, 400,
                       error_body("send one photo as the body (Content-Type image/*) or several as multipart/form-data"));
    }
    if (req.body.empty()) return send_json(res, 400, error_body("the request has no photo (an empty body)"));
    photos.push_back(req.body);
  }
  // More photos than may ever wait together: retrying cannot help, unlike a full queue.
  if (photos.size() > batcher.max_queue()) {
    return send_json(res, 413,
                     error_body("the request holds " + std::to_string(photos.size()) + " photos; at most " +
                                std::to_string(batcher.max_queue()) + " may wait at once (--max-queue): send them in parts"));
  }
  auto futures = batcher.submit(std::move(photos), params);
  if (!futures) {
    res.set_header("Retry-After", "1");
    return send_json(res, 503, error_body("too many photos waiting; try again in a moment"));
  }
  if (!multipart) {
    const Outcome o = (*futures)[0].get();
    return send_json(res, o.ok ? 200 : 400, outcome_json(o));
  }
  json list = json::array();
  for (size_t i = 0; i < futures->size(); ++i) {
    json j = outcome_json((*futures)[i].get());
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
  captioner_params params = captioner_default_params();
  params.threads = o.threads;
  params.batch_size = o.batch;
  captioner_model* model = captioner_load_with_params(o.model.empty() ? nullptr : o.model.c_str(), &params);
  if (!model) throw std::runtime_error(captioner_last_error());
  std::unique_ptr<captioner_model, void (*)(captioner_model*)> owned(model, &captioner_free);
  Metrics metrics;
  Batcher batcher(model, o, metrics);

  httplib::Server server;
  server.new_task_queue = [n = o.http_threads] { return new httplib::ThreadPool(static_cast<size_t>(n)); };
  server.set_payload_max_length(static_cast<size_t>(o.max_body_mb) << 20);
  server.set_read_timeout(o.timeout_s, 0);
  server.set_write_timeout(o.timeout_s, 0);
  server.set_keep_alive_timeout(5);
  server.set_keep_alive_max_count(100);
  server.Post("/v1/captions", [&](const httplib::Request& req, httplib::Response& res) {
    const auto t0 = Clock::now();  // the body is read by now: this is the time to an answer
    handle_captions(req, res, batcher);
    metrics.request(res.status, std::chrono::duration<double>(Clock::now() - t0).count());
  });
  server.Get("/health", [&](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, json{{"status", "ok"}, {"queue", batcher.depth()}});
  });
  server.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.text(batcher.depth()), "text/plain; version=0.0.4");
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
  const int port = o.port == 0 ? server.bind_to_any_port(o.host) : (server.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port < 0) {
    throw std::runtime_error("cannot listen on " + o.host + ":" + std::to_string(o.port) +
                             " (in use, or not an address of this machine); choose another --port or --host");
  }
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
  watcher.join();
  batcher.finish();
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
  cmd->add_option("--max-queue", o->max_queue, "Photos that may wait (more: 503 with Retry-After)")->check(CLI::Range(1, 100000));
  cmd->add_option("--batch", o->batch, "Photos captioned together")->check(CLI::Range(1, 256));
  cmd->add_option("--batch-wait-ms", o->batch_wait_ms, "How long the first photo waits for others to join its batch")
      ->check(CLI::Range(0, 1000));
  cmd->add_option("--http-threads", o->http_threads, "Connections served at once")->check(CLI::Range(1, 1024));
  cmd->add_option("--timeout", o->timeout_s, "Seconds to read a request or write an answer")->check(CLI::Range(1, 3600));
  cmd->add_option("--threads", o->threads, "LibTorch threads (0: every usable core)")->check(CLI::Range(0, 256));
  cmd->add_flag("--quiet,-q", o->quiet, "No closing line");
  cmd->callback([o] { run_serve(*o); });
}

}  // namespace captioner::cli
