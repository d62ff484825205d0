// 2-D convolution (NCHW, float32, groups 1, no dilation, zero padding) through oneDNN, for CPU training
// in Paddle's eager mode: forward, and a backward that computes the input and weight gradients.
//
// Paddle 3.3.1's eager CPU conv is im2col + one GEMM per image; oneDNN's direct convolution runs on
// blocked memory formats with kernels for the CPU's vector width. Tensors stay plain NCHW/OIHW in
// Paddle: each call reorders into the formats oneDNN picks (format `any`) and back, which costs
// memory traffic but keeps every other operator unchanged. Primitives are cached per shape.
// Built by paddle_cnn/onednn_conv.py against the vendored oneDNN 3.6 headers and Paddle's own
// libdnnl.so.3.
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "paddle/extension.h"

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

dnnl::engine& cpu_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

struct ConvPrims {
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_backward_data::primitive_desc bwd_data_pd;
  dnnl::convolution_backward_weights::primitive_desc bwd_w_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_w;
  memory::desc src_plain, w_plain, dst_plain;
};

ConvPrims& prims_for(const std::vector<int64_t>& x, const std::vector<int64_t>& w, int sh, int sw, int ph,
                     int pw) {
  static std::unordered_map<std::string, ConvPrims> cache;
  static std::mutex mu;
  std::string key;
  for (auto v : x) key += std::to_string(v) + ",";
  for (auto v : w) key += std::to_string(v) + ",";
  key += std::to_string(sh) + "," + std::to_string(sw) + "," + std::to_string(ph) + "," + std::to_string(pw);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;

  auto& eng = cpu_engine();
  int64_t oh = (x[2] + 2 * ph - w[2]) / sh + 1, ow = (x[3] + 2 * pw - w[3]) / sw + 1;
  memory::dims src{x[0], x[1], x[2], x[3]}, wt{w[0], w[1], w[2], w[3]}, dst{x[0], w[0], oh, ow};
  memory::dims strides{sh, sw}, pad_l{ph, pw};
  // Right padding that reproduces the floor in the output size.
  memory::dims pad_r{(oh - 1) * sh + w[2] - x[2] - ph, (ow - 1) * sw + w[3] - x[3] - pw};
  // Format `any`: oneDNN picks blocked layouts. Plain NCHW/OIHW here took reference kernels on some
  // shapes (a 512-channel 1x1 map, LeNet's 1-channel input: 60x slower than blocked, measured).
  memory::desc src_md(src, dt::f32, tag::any), w_md(wt, dt::f32, tag::any), dst_md(dst, dt::f32, tag::any);
  auto fwd_pd = dnnl::convolution_forward::primitive_desc(eng, dnnl::prop_kind::forward_training,
                                                          dnnl::algorithm::convolution_direct, src_md, w_md,
                                                          dst_md, strides, pad_l, pad_r);
  auto bwd_data_pd = dnnl::convolution_backward_data::primitive_desc(
      eng, dnnl::algorithm::convolution_direct, src_md, w_md, dst_md, strides, pad_l, pad_r, fwd_pd);
  auto bwd_w_pd = dnnl::convolution_backward_weights::primitive_desc(
      eng, dnnl::algorithm::convolution_direct, src_md, w_md, dst_md, strides, pad_l, pad_r, fwd_pd);
  ConvPrims p{fwd_pd,
              bwd_data_pd,
              bwd_w_pd,
              dnnl::convolution_forward(fwd_pd),
              dnnl::convolution_backward_data(bwd_data_pd),
              dnnl::convolution_backward_weights(bwd_w_pd),
              memory::desc(src, dt::f32, tag::nchw),
              memory::desc(wt, dt::f32, tag::oihw),
              memory::desc(dst, dt::f32, tag::nchw)};
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
  auto& p = prims_for(x.shape(), w.shape(), sh, sw, ph, pw);
  auto dims = p.dst_plain.get_dims();
  auto out = paddle::empty({dims[0], dims[1], dims[2], dims[3]}, paddle::DataType::FLOAT32, x.place());
  dnnl::stream s(cpu_engine());
  memory xu(p.src_plain, cpu_engine(), const_cast<float*>(x.data<float>()));
  memory wu(p.w_plain, cpu_engine(), const_cast<float*>(w.data<float>()));
  memory yu(p.dst_plain, cpu_engine(), out.data<float>());
  memory xs = as_format(p.fwd_pd.src_desc(), xu, s), ws = as_format(p.fwd_pd.weights_desc(), wu, s);
  memory ys = p.fwd_pd.dst_desc() == p.dst_plain ? yu : memory(p.fwd_pd.dst_desc(), cpu_engine());
  p.fwd.execute(s, {{DNNL_ARG_SRC, xs}, {DNNL_ARG_WEIGHTS, ws}, {DNNL_ARG_DST, ys}});
  write_back(ys, yu, s);
  s.wait();
  return {out};
}

std::vector<paddle::Tensor> ConvBackward(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& dy,
                                         int sh, int sw, int ph, int pw, bool need_dx) {
  auto& p = prims_for(x.shape(), w.shape(), sh, sw, ph, pw);
  // need_dx false (the network's input): Paddle discards this gradient; zeros cost a memset, not a conv.
  auto dx = need_dx ? paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place())
                    : paddle::full(x.shape(), 0.0f, paddle::DataType::FLOAT32, x.place());
  auto dw = paddle::empty(w.shape(), paddle::DataType::FLOAT32, x.place());
  auto& eng = cpu_engine();
  dnnl::stream s(eng);
  memory xu(p.src_plain, eng, const_cast<float*>(x.data<float>()));
  memory wu(p.w_plain, eng, const_cast<float*>(w.data<float>()));
  memory dyu(p.dst_plain, eng, const_cast<float*>(dy.data<float>()));
  memory dxu(p.src_plain, eng, dx.data<float>()), dwu(p.w_plain, eng, dw.data<float>());
  memory dy_d = as_format(p.bwd_data_pd.diff_dst_desc(), dyu, s);
  if (need_dx) {
    memory w_d = as_format(p.bwd_data_pd.weights_desc(), wu, s);
    memory dx_d = p.bwd_data_pd.diff_src_desc() == p.src_plain ? dxu : memory(p.bwd_data_pd.diff_src_desc(), eng);
    p.bwd_data.execute(s, {{DNNL_ARG_DIFF_DST, dy_d}, {DNNL_ARG_WEIGHTS, w_d}, {DNNL_ARG_DIFF_SRC, dx_d}});
    write_back(dx_d, dxu, s);
  }
  // The weight gradient reuses the reordered output gradient when both primitives want one format.
  memory dy_w = p.bwd_w_pd.diff_dst_desc() == dy_d.get_desc() ? dy_d : as_format(p.bwd_w_pd.diff_dst_desc(), dyu, s);
  memory x_w = as_format(p.bwd_w_pd.src_desc(), xu, s);
  memory dw_w = p.bwd_w_pd.diff_weights_desc() == p.w_plain ? dwu : memory(p.bwd_w_pd.diff_weights_desc(), eng);
  p.bwd_w.execute(s, {{DNNL_ARG_DIFF_DST, dy_w}, {DNNL_ARG_SRC, x_w}, {DNNL_ARG_DIFF_WEIGHTS, dw_w}});
  write_back(dw_w, dwu, s);
  s.wait();
  return {dx, dw};
}

std::vector<std::vector<int64_t>> ConvInferShape(const std::vector<int64_t>& x, const std::vector<int64_t>& w, int sh,
                                                 int sw, int ph, int pw) {
  return {{x[0], w[0], (x[2] + 2 * ph - w[2]) / sh + 1, (x[3] + 2 * pw - w[3]) / sw + 1}};
}

std::vector<paddle::DataType> ConvInferDtype(const paddle::DataType& x, const paddle::DataType& w) { return {x}; }

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
