// What the compiled operators share: one oneDNN CPU engine per process.
#pragma once

#include "oneapi/dnnl/dnnl.hpp"

inline dnnl::engine& cpu_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}
