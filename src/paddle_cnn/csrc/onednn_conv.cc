// 2-D convolution (NCHW, float32, groups 1, no dilation, zero padding) through oneDNN, for CPU training
// in Paddle's eager mode: forward, and a backward that computes the input and weight gradients.
//
// Paddle 3.3.1's eager CPU conv is im2col + one GEMM per image; oneDNN's direct convolution runs on
// blocked memory formats with kernels for the CPU's vector width. Tensors stay plain NCHW/OIHW in
// Paddle: each call reorders into the formats oneDNN picks (format `any`) and back, which costs
// memory traffic but keeps every other operator unchanged. Primitives are cached per shape.
// Built by paddle_cnn/onednn_conv.py against the vendored oneDNN 3.6 headers and Paddle's own
// libdnnl.so.3.
//
// One case skips the convolution primitives: where every output window covers the whole input (ResNet18's
// 3x3 convs on 1x1 and 2x2 maps at 32x32 input, LeNet's last conv), the conv is exactly one GEMM with a
// dense [O x out_pixels, C x in_pixels] matrix gathered from the kernel. oneDNN's direct kernels multiply
// every tap, padding included: 9x the useful work on a 1x1 map, plus a reorder of the whole kernel.
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "onednn_common.h"
#include "paddle/extension.h"

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

// The dense-GEMM form of a global-window conv: tap[q * hw + r] is the kernel tap (ky * kw + kx) that
// links output pixel q to input pixel r, and offset[q * hw + r] = q * c * hw + r is where that pair sits
// in a channel pair's block of the dense matrix.
struct DenseConv {
  int64_t n = 0, c = 0, hw = 0, o = 0, p = 0, kk = 0;
  bool identity = false;  // the matrix is the kernel itself (one output pixel, input as large as the kernel)
  std::vector<int64_t> tap, offset;
};

struct ConvPrims {
  bool dense = false;
  DenseConv d;
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_backward_data::primitive_desc bwd_data_pd;
  dnnl::convolution_backward_weights::primitive_desc bwd_w_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_w;
  memory::desc src_plain, w_plain, dst_plain;
};

DenseConv dense_conv(const std::vector<int64_t>& x, const std::vector<int64_t>& w, int sh, int sw, int ph, int pw,
                     int64_t oh, int64_t ow) {
  DenseConv d;
  d.n = x[0], d.c = x[1], d.hw = x[2] * x[3], d.o = w[0], d.p = oh * ow, d.kk = w[2] * w[3];
  d.tap.resize(d.p * d.hw);
  d.offset.resize(d.p * d.hw);
  d.identity = d.p == 1 && d.hw == d.kk;
  for (int64_t oy = 0; oy < oh; ++oy)
    for (int64_t ox = 0; ox < ow; ++ox)
      for (int64_t iy = 0; iy < x[2]; ++iy)
        for (int64_t ix = 0; ix < x[3]; ++ix) {
          int64_t q = oy * ow + ox, r = iy * x[3] + ix;
          int64_t t = (iy - oy * sh + ph) * w[3] + (ix - ox * sw + pw);
          d.tap[q * d.hw + r] = t;
          d.offset[q * d.hw + r] = q * d.c * d.hw + r;
          d.identity = d.identity && t == r;
        }
  return d;
}

// The dense matrix [O x P, C x HW] of kernel w [O, C, KH, KW] (row o * P + q, column c * HW + r).
std::vector<float> dense_matrix(const DenseConv& d, const float* w) {
  std::vector<float> m(d.o * d.p * d.c * d.hw);
  float* out = m.data();
  for (int64_t o = 0; o < d.o; ++o)
    for (int64_t q = 0; q < d.p; ++q)
      for (int64_t c = 0; c < d.c; ++c) {
        const float* wk = w + (o * d.c + c) * d.kk;
        const int64_t* taps = d.tap.data() + q * d.hw;
        for (int64_t r = 0; r < d.hw; ++r) *out++ = wk[taps[r]];
      }
  return m;
}

// Row-major single-precision GEMM through oneDNN: C = op(A) op(B) + beta C.
void sgemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
           float beta, float* c, int64_t ldc) {
  PD_CHECK(dnnl_sgemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc) == dnnl_success,
           "onednn_conv2d: sgemm failed");
}

void dense_forward(const DenseConv& d, const float* x, const float* w, const float* b, float* y) {
  std::vector<float> m = d.identity ? std::vector<float>() : dense_matrix(d, w);
  const float* wm = d.identity ? w : m.data();
  if (b) {  // the GEMM accumulates onto the bias (beta 1)
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t o = 0; o < d.o; ++o) std::fill_n(y + (n * d.o + o) * d.p, d.p, b[o]);
  }
  sgemm('N', 'T', d.n, d.o * d.p, d.c * d.hw, x, d.c * d.hw, wm, d.c * d.hw, b ? 1.0f : 0.0f, y, d.o * d.p);
}

void dense_backward(const DenseConv& d, const float* x, const float* w, const float* dy, float* dx, float* dw,
                    float* db) {
  int64_t rows = d.o * d.p, cols = d.c * d.hw;
  if (db) {
    std::fill_n(db, d.o, 0.0f);
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t o = 0; o < d.o; ++o)
        for (int64_t q = 0; q < d.p; ++q) db[o] += dy[n * rows + o * d.p + q];
  }
  if (dx) {
    std::vector<float> m = d.identity ? std::vector<float>() : dense_matrix(d, w);
    sgemm('N', 'N', d.n, cols, rows, dy, rows, d.identity ? w : m.data(), cols, 0.0f, dx, cols);
  }
  if (d.identity) {
    sgemm('T', 'N', rows, cols, d.n, dy, rows, x, cols, 0.0f, dw, cols);
    return;
  }
  std::vector<float> dm(rows * cols);
  sgemm('T', 'N', rows, cols, d.n, dy, rows, x, cols, 0.0f, dm.data(), cols);
  // Each kernel tap sums the matrix entries that share it, in (q, r) order; taps no output reaches get 0.
  // One memset, then only the used taps: per-channel-pair loops over all kk taps cost more than the
  // sums on a 1x1 map (2.7 ms vs 1.2 for a 512x512x3x3 kernel's gradient, AMD EPYC, measured).
  std::fill_n(dw, d.o * d.c * d.kk, 0.0f);
  for (int64_t o = 0; o < d.o; ++o)
    for (int64_t c = 0; c < d.c; ++c) {
      const float* block = dm.data() + o * d.p * cols + c * d.hw;
      float* taps = dw + (o * d.c + c) * d.kk;
      for (size_t j = 0; j < d.tap.size(); ++j) taps[d.tap[j]] += block[d.offset[j]];
    }
}

ConvPrims& prims_for(const std::vector<int64_t>& x, const std::vector<int64_t>& w, int sh, int sw, int ph, int pw,
                     bool bias) {
  static std::unordered_map<std::string, ConvPrims> cache;
  static std::mutex mu;
  std::string key;
  for (auto v : x) key += std::to_string(v) + ",";
  for (auto v : w) key += std::to_string(v) + ",";
  key += std::to_string(sh) + "," + std::to_string(sw) + "," + std::to_string(ph) + "," + std::to_string(pw);
  key += bias ? ",b" : "";
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;

  auto& eng = cpu_engine();
  int64_t oh = (x[2] + 2 * ph - w[2]) / sh + 1, ow = (x[3] + 2 * pw - w[3]) / sw + 1;
  // Every window covers the input: output 0's window reaches the last input row, the last output's
  // starts at or before row 0 (same for columns).
  if (x[2] <= w[2] - ph && (oh - 1) * sh <= ph && x[3] <= w[3] - pw && (ow - 1) * sw <= pw) {
    ConvPrims p;
    p.dense = true;
    p.d = dense_conv(x, w, sh, sw, ph, pw, oh, ow);
    p.dst_plain = memory::desc({x[0], w[0], oh, ow}, dt::f32, tag::nchw);
    return cache.emplace(key, std::move(p)).first->second;
  }
  memory::dims src{x[0], x[1], x[2], x[3]}, wt{w[0], w[1], w[2], w[3]}, dst{x[0], w[0], oh, ow};
  memory::dims strides{sh, sw}, pad_l{ph, pw};
  // Right padding that reproduces the floor in the output size.
  memory::dims pad_r{(oh - 1) * sh + w[2] - x[2] - ph, (ow - 1) * sw + w[3] - x[3] - pw};
  // Format `any`: oneDNN picks blocked layouts. Plain NCHW/OIHW here took reference kernels on some
  // shapes (a 512-channel 1x1 map, LeNet's 1-channel input: 60x slower than blocked, measured).
  memory::desc src_md(src, dt::f32, tag::any), w_md(wt, dt::f32, tag::any), dst_md(dst, dt::f32, tag::any);
  // The bias is added inside the forward kernel and its gradient summed by the weight-gradient kernel.
  memory::desc b_md = bias ? memory::desc({w[0]}, dt::f32, tag::a) : memory::desc();
  auto alg = dnnl::algorithm::convolution_direct;
  auto fwd_pd = dnnl::convolution_forward::primitive_desc(eng, dnnl::prop_kind::forward_training, alg, src_md, w_md,
                                                          b_md, dst_md, strides, pad_l, pad_r);
  auto bwd_data_pd = dnnl::convolution_backward_data::primitive_desc(eng, alg, src_md, w_md, dst_md, strides, pad_l,
                                                                     pad_r, fwd_pd);
  auto bwd_w_pd = dnnl::convolution_backward_weights::primitive_desc(eng, alg, src_md, w_md, b_md, dst_md, strides,
                                                                     pad_l, pad_r, fwd_pd);
  ConvPrims p;
  p.fwd_pd = fwd_pd;
  p.bwd_data_pd = bwd_data_pd;
  p.bwd_w_pd = bwd_w_pd;
  p.fwd = dnnl::convolution_forward(fwd_pd);
  p.bwd_data = dnnl::convolution_backward_data(bwd_data_pd);
  p.bwd_w = dnnl::convolution_backward_weights(bwd_w_pd);
  p.src_plain = memory::desc(src, dt::f32, tag::nchw);
  p.w_plain = memory::desc(wt, dt::f32, tag::oihw);
  p.dst_plain = memory::desc(dst, dt::f32, tag::nchw);
  return cache.emplace(key, std::move(p)).first->second;
}

// A oneDNN memory in the primitive's format: the user buffer itself when formats agree, else a reordered copy.
memory as_format(const memory::desc& want, memory& user, dnnl::stream& s) {
  if (want == user.get_desc()) return user;
  memory m(want, cpu_engine());
  dnnl::reorder(user, m).execute(s, user, m);
  return m;
}

void write_back(memory& result, memory& user, dnnl::stream& s) {
  if (result.get_data_handle() != user.get_data_handle()) dnnl::reorder(result, user).execute(s, result, user);
}

// The forward for a cached plan; b may be null (no bias).
void conv_forward(ConvPrims& p, const float* x, const float* w, const float* b, float* y) {
  if (p.dense) return dense_forward(p.d, x, w, b, y);
  auto& eng = cpu_engine();
  dnnl::stream s(eng);
  memory xu(p.src_plain, eng, const_cast<float*>(x)), wu(p.w_plain, eng, const_cast<float*>(w));
  memory yu(p.dst_plain, eng, y);
  memory xs = as_format(p.fwd_pd.src_desc(), xu, s), ws = as_format(p.fwd_pd.weights_desc(), wu, s);
  memory ys = p.fwd_pd.dst_desc() == p.dst_plain ? yu : memory(p.fwd_pd.dst_desc(), eng);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, xs}, {DNNL_ARG_WEIGHTS, ws}, {DNNL_ARG_DST, ys}};
  if (b) args[DNNL_ARG_BIAS] = memory(p.fwd_pd.bias_desc(), eng, const_cast<float*>(b));
  p.fwd.execute(s, args);
  write_back(ys, yu, s);
  s.wait();
}

// The backward for a cached plan: dx (null: not wanted), dw, db (null: no bias).
void conv_backward(ConvPrims& p, const float* x, const float* w, const float* dy, float* dx, float* dw, float* db) {
  if (p.dense) return dense_backward(p.d, x, w, dy, dx, dw, db);
  auto& eng = cpu_engine();
  dnnl::stream s(eng);
  memory xu(p.src_plain, eng, const_cast<float*>(x)), wu(p.w_plain, eng, const_cast<float*>(w));
  memory dyu(p.dst_plain, eng, const_cast<float*>(dy)), dwu(p.w_plain, eng, dw);
  memory dy_d = as_format(p.bwd_data_pd.diff_dst_desc(), dyu, s);
  if (dx) {
    memory dxu(p.src_plain, eng, dx), w_d = as_format(p.bwd_data_pd.weights_desc(), wu, s);
    memory dx_d = p.bwd_data_pd.diff_src_desc() == p.src_plain ? dxu : memory(p.bwd_data_pd.diff_src_desc(), eng);
    p.bwd_data.execute(s, {{DNNL_ARG_DIFF_DST, dy_d}, {DNNL_ARG_WEIGHTS, w_d}, {DNNL_ARG_DIFF_SRC, dx_d}});
    write_back(dx_d, dxu, s);
  }
  // The weight gradient reuses the reordered output gradient when both primitives want one format.
  memory dy_w = p.bwd_w_pd.diff_dst_desc() == dy_d.get_desc() ? dy_d : as_format(p.bwd_w_pd.diff_dst_desc(), dyu, s);
  memory x_w = as_format(p.bwd_w_pd.src_desc(), xu, s);
  memory dw_w = p.bwd_w_pd.diff_weights_desc() == p.w_plain ? dwu : memory(p.bwd_w_pd.diff_weights_desc(), eng);
  std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, dy_w}, {DNNL_ARG_SRC, x_w}, {DNNL_ARG_DIFF_WEIGHTS, dw_w}};
  if (db) args[DNNL_ARG_DIFF_BIAS] = memory(p.bwd_w_pd.diff_bias_desc(), eng, db);
  p.bwd_w.execute(s, args);
  write_back(dw_w, dwu, s);
  s.wait();
}

paddle::Tensor empty_like(const std::vector<int64_t>& shape, const paddle::Tensor& x) {
  return paddle::empty(shape, paddle::DataType::FLOAT32, x.place());
}

}  // namespace

void check_inputs(const paddle::Tensor& x, const paddle::Tensor& w) {
  PD_CHECK(x.is_cpu() && w.is_cpu(), "onednn_conv2d: CPU tensors only");
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32 && w.dtype() == paddle::DataType::FLOAT32,
           "onednn_conv2d: float32 only");
  PD_CHECK(x.shape().size() == 4 && w.shape().size() == 4 && x.shape()[1] == w.shape()[1],
           "onednn_conv2d: x [N, C, H, W] and w [O, C, KH, KW] with the same C");
}

std::vector<paddle::Tensor> ConvForward(const paddle::Tensor& x, const paddle::Tensor& w, int sh, int sw, int ph,
                                        int pw, bool need_dx) {
  check_inputs(x, w);
  auto& p = prims_for(x.shape(), w.shape(), sh, sw, ph, pw, false);
  auto out = empty_like(p.dst_plain.get_dims(), x);
  conv_forward(p, x.data<float>(), w.data<float>(), nullptr, out.data<float>());
  return {out};
}

// need_dx false (the network's input): Paddle discards this gradient; zeros cost a memset, not a conv.
paddle::Tensor input_grad(const paddle::Tensor& x, bool need_dx) {
  return need_dx ? empty_like(x.shape(), x) : paddle::full(x.shape(), 0.0f, paddle::DataType::FLOAT32, x.place());
}

std::vector<paddle::Tensor> ConvBackward(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& dy,
                                         int sh, int sw, int ph, int pw, bool need_dx) {
  auto& p = prims_for(x.shape(), w.shape(), sh, sw, ph, pw, false);
  auto dx = input_grad(x, need_dx), dw = empty_like(w.shape(), x);
  conv_backward(p, x.data<float>(), w.data<float>(), dy.data<float>(), need_dx ? dx.data<float>() : nullptr,
                dw.data<float>(), nullptr);
  return {dx, dw};
}

std::vector<paddle::Tensor> ConvBiasForward(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b,
                                            int sh, int sw, int ph, int pw, bool need_dx) {
  check_inputs(x, w);
  PD_CHECK(b.is_cpu() && b.dtype() == paddle::DataType::FLOAT32 && b.shape().size() == 1 && b.shape()[0] == w.shape()[0],
           "onednn_conv2d_bias: a float32 CPU bias of O values");
  auto& p = prims_for(x.shape(), w.shape(), sh, sw, ph, pw, true);
  auto out = empty_like(p.dst_plain.get_dims(), x);
  conv_forward(p, x.data<float>(), w.data<float>(), b.data<float>(), out.data<float>());
  return {out};
}

std::vector<paddle::Tensor> ConvBiasBackward(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b,
                                             const paddle::Tensor& dy, int sh, int sw, int ph, int pw, bool need_dx) {
  auto& p = prims_for(x.shape(), w.shape(), sh, sw, ph, pw, true);
  auto dx = input_grad(x, need_dx), dw = empty_like(w.shape(), x), db = empty_like(b.shape(), x);
  conv_backward(p, x.data<float>(), w.data<float>(), dy.data<float>(), need_dx ? dx.data<float>() : nullptr,
                dw.data<float>(), db.data<float>());
  return {dx, dw, db};
}

std::vector<std::vector<int64_t>> ConvInferShape(const std::vector<int64_t>& x, const std::vector<int64_t>& w, int sh,
                                                 int sw, int ph, int pw) {
  return {{x[0], w[0], (x[2] + 2 * ph - w[2]) / sh + 1, (x[3] + 2 * pw - w[3]) / sw + 1}};
}

std::vector<std::vector<int64_t>> ConvBiasInferShape(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                                                     const std::vector<int64_t>& b, int sh, int sw, int ph, int pw) {
  return ConvInferShape(x, w, sh, sw, ph, pw);
}

std::vector<paddle::DataType> ConvInferDtype(const paddle::DataType& x, const paddle::DataType& w) { return {x}; }

std::vector<paddle::DataType> ConvBiasInferDtype(const paddle::DataType& x, const paddle::DataType& w,
                                                 const paddle::DataType& b) {
  return {x};
}

PD_BUILD_OP(onednn_conv2d)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs({"stride_h: int", "stride_w: int", "pad_h: int", "pad_w: int", "need_dx: bool"})
    .SetKernelFn(PD_KERNEL(ConvForward))
    .SetInferShapeFn(PD_INFER_SHAPE(ConvInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(ConvInferDtype));

PD_BUILD_GRAD_OP(onednn_conv2d)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs({"stride_h: int", "stride_w: int", "pad_h: int", "pad_w: int", "need_dx: bool"})
    .SetKernelFn(PD_KERNEL(ConvBackward));

// The same convolution with its bias added in the kernel (one pass over the output instead of two).
PD_BUILD_OP(onednn_conv2d_bias)
    .Inputs({"X", "W", "B"})
    .Outputs({"Out"})
    .Attrs({"stride_h: int", "stride_w: int", "pad_h: int", "pad_w: int", "need_dx: bool"})
    .SetKernelFn(PD_KERNEL(ConvBiasForward))
    .SetInferShapeFn(PD_INFER_SHAPE(ConvBiasInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(ConvBiasInferDtype));

PD_BUILD_GRAD_OP(onednn_conv2d_bias)
    .Inputs({"X", "W", "B", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("B")})
    .Attrs({"stride_h: int", "stride_w: int", "pad_h: int", "pad_w: int", "need_dx: bool"})
    .SetKernelFn(PD_KERNEL(ConvBiasBackward));
