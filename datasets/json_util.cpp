#include "datasets/json_util.h"

#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "datasets/file_io.h"

namespace captioner {

using nlohmann::json;

static std::string line_col(const std::string& text, size_t byte) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return std::to_string(line) + ":" + std::to_string(col);
}

json parse_json_text(const std::string& text, const std::string& origin) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    // nlohmann's message starts with "[json.exception.parse_error.101] parse error at line..";
    // keep only the part after the position, which says what was wrong.
    std::string what = e.what();
    auto colon = what.find(": ", what.find("parse error"));
    std::string reason = colon == std::string::npos ? what : what.substr(colon + 2);
    size_t at = e.byte > 0 ? e.byte - 1 : 0;
    throw std::runtime_error(origin + ":" + line_col(text, at) + ": invalid JSON: " + reason);
  } catch (const json::exception& e) {
    // e.g. out_of_range.406 for a number like 1e9400: valid syntax, unrepresentable value.
    std::string what = e.what();
    auto bracket = what.find("] ");
    throw std::runtime_error(origin + ": invalid JSON: " + (bracket == std::string::npos ? what : what.substr(bracket + 2)));
  }
}

json load_json_file(const std::filesystem::path& path) { return parse_json_text(read_file(path), path.string()); }

std::string json_type_name(const json& value) {
  if (value.is_number_integer()) return "integer";
  if (value.is_number_float()) return "number";
  return value.type_name();
}

void JsonView::fail(const std::string& message) const {
  throw std::runtime_error(file_ + ": " + (where_.empty() ? "top level" : where_) + ": " + message);
}

bool JsonView::has(const char* key) const { return value_->is_object() && value_->contains(key); }

JsonView JsonView::at(const char* key) const {
  expect_object();
  auto it = value_->find(key);
  if (it == value_->end()) fail(std::string("missing key '") + key + "'");
  return JsonView(*it, file_, where_.empty() ? key : where_ + "." + key);
}

JsonView JsonView::at(size_t index) const {
  expect_array();
  if (index >= value_->size()) fail("index " + std::to_string(index) + " out of range");
  return JsonView((*value_)[index], file_, where_ + "[" + std::to_string(index) + "]");
}

size_t JsonView::array_size() const {
  expect_array();
  return value_->size();
}

JsonView JsonView::expect_object() const {
  if (!value_->is_object()) fail("expected an object, found " + json_type_name(*value_));
  return *this;
}

JsonView JsonView::expect_array() const {
  if (!value_->is_array()) fail("expected an array, found " + json_type_name(*value_));
  return *this;
}

std::string JsonView::as_string() const {
  if (!value_->is_string()) fail("expected a string, found " + json_type_name(*value_));
  return value_->get<std::string>();
}

int64_t JsonView::as_int() const {
  if (value_->is_number_unsigned()) {
    if (value_->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return value_->get<int64_t>();
  } else if (value_->is_number_integer()) {
    return value_->get<int64_t>();
  } else if (value_->is_number_float()) {
    // Range first: casting a double outside int64 is undefined behaviour (found by fuzz_results).
    double d = value_->get<double>();
    if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == std::trunc(d)) return static_cast<int64_t>(d);
  }
  fail("expected an integer, found " + json_type_name(*value_) + " " + value_->dump());
}

double JsonView::as_number() const {
  if (!value_->is_number()) fail("expected a number, found " + json_type_name(*value_));
  return value_->get<double>();
}

bool JsonView::as_bool() const {
  if (!value_->is_boolean()) fail("expected true or false, found " + json_type_name(*value_));
  return value_->get<bool>();
}

}  // namespace captioner
