#pragma once
/// The dashboard's web UI, embedded: generated at build time by
/// src/dashboard/ui/build.mjs (TypeScript + Preact bundled by esbuild).

#include <cstddef>
#include <string_view>

namespace dtsd::dashboard {

struct ui_asset {
  const char* path;          ///< "/", "/app.js", "/app.css"
  const char* content_type;
  const unsigned char* data;
  std::size_t size;
};

/// The asset served at `path`, or null.
const ui_asset* find_ui_asset(std::string_view path);

}  // namespace dtsd::dashboard
