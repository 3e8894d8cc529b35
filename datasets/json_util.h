// JSON reading with errors a user can act on: the file, the line and column of a syntax error,
// and the path of the offending entry ("annotations[12].caption") with what was found instead.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace captioner {

// Parses a JSON file; syntax errors report "F:line:col: ...". Invalid UTF-8 is a syntax error.
nlohmann::json load_json_file(const std::filesystem::path& path);

// Parses JSON text; `origin` names where it came from in error messages.
nlohmann::json parse_json_text(const std::string& text, const std::string& origin);

// A cursor for validating one JSON value: it knows the file and the path to the value, so every
// complaint names both. Members throw std::runtime_error.
class JsonView {
 public:
  JsonView(const nlohmann::json& value, std::string file, std::string where)
      : value_(&value), file_(std::move(file)), where_(std::move(where)) {}

  const nlohmann::json& value() const { return *value_; }
  const std::string& file() const { return file_; }
  const std::string& where() const { return where_; }

  bool has(const char* key) const;
  JsonView at(const char* key) const;  // required key of an object
  JsonView at(size_t index) const;     // element of an array
  size_t array_size() const;           // requires an array

  JsonView expect_object() const;
  JsonView expect_array() const;
  std::string as_string() const;
  int64_t as_int() const;
  double as_number() const;
  bool as_bool() const;

  [[noreturn]] void fail(const std::string& message) const;

 private:
  const nlohmann::json* value_;
  std::string file_;
  std::string where_;
};

// "string", "number", ... for messages.
std::string json_type_name(const nlohmann::json& value);

}  // namespace captioner
