#pragma once

// Tables as kubectl prints them: upper-case headers, columns padded to their widest cell and
// separated by three spaces, the last column unpadded.

#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

namespace flatnet::emulator {

class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void add(std::vector<std::string> row) {
    row.resize(headers_.size());
    rows_.push_back(std::move(row));
  }
  bool empty() const { return rows_.empty(); }
  void print(std::ostream& out) const {
    std::vector<std::size_t> widths(headers_.size());
    for (std::size_t c = 0; c < headers_.size(); ++c)
      widths[c] = width(headers_[c]);
    for (const auto& row : rows_) {
      for (std::size_t c = 0; c < row.size(); ++c)
        widths[c] = std::max(widths[c], width(row[c]));
    }
    auto line = [&](const std::vector<std::string>& cells) {
      std::string text;
      for (std::size_t c = 0; c < cells.size(); ++c) {
        text += cells[c];
        if (c + 1 < cells.size()) text += std::string(widths[c] - width(cells[c]) + 3, ' ');
      }
      while (!text.empty() && text.back() == ' ')
        text.pop_back();
      out << text << "\n";
    };
    line(headers_);
    for (const auto& row : rows_)
      line(row);
  }

 private:
  // Display width: UTF-8 continuation bytes take no column.
  static std::size_t width(const std::string& text) {
    return static_cast<std::size_t>(
        std::count_if(text.begin(), text.end(), [](char c) { return (c & 0xc0) != 0x80; }));
  }

  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace flatnet::emulator
