// im2win_ort._kernels: the same kernels as the ORT library, callable on NumPy arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <unistd.h>

#include <optional>

#include "conv/conv_driver.h"
#include "conv/conv_nhwc.h"
#include "conv/winograd_nhwc.h"
#include "conv/plan_measure.h"
#include "kernels/cpu_dispatch.h"
#include "kernels/fma_probe.h"
#include "conv/weight_pack.h"

namespace py = pybind11;

namespace im2win {
namespace {

using Ints = std::optional<std::vector<int64_t>>;
using FloatArray = py::array_t<float, py::array::c_style>;

std::vector<int64_t> Dims(const py::array& a) { return std::vector<int64_t>(a.shape(), a.shape() + a.ndim()); }

// Accepts float32 arrays only (any memory order); other dtypes are a TypeError, not a silent cast.
FloatArray AsFloat32(const py::handle& obj, const char* name) {
  py::array a = py::array::ensure(obj);
  if (!a) throw py::type_error(std::string(name) + " must be a NumPy array");
  // By equality, not identity: a float32 dtype that came through pickle is another object.
  if (!a.dtype().equal(py::dtype::of<float>()))
    throw py::type_error(std::string(name) + " must be float32, got " + std::string(py::str(a.dtype())));
  // The C-contiguous copy of a strided or broadcast view may not fit in memory. A copy larger than
  // the machine's memory is refused before it is tried (where the system overcommits, the attempt
  // would succeed and the copy be killed midway); one that fails makes ensure() give a null handle
  // (NumPy's error cleared), which must never reach the kernels.
  auto out_of_memory = [&](const std::string& why) {
    const std::string message =
        std::string(name) + ": a C-contiguous float32 copy of shape " + DimsToString(Dims(a)) + " " + why;
    PyErr_SetString(PyExc_MemoryError, message.c_str());
    return py::error_already_set();
  };
  const bool contiguous_already = a.flags() & py::array::c_style;
  const double bytes = static_cast<double>(a.size()) * sizeof(float);
  const double memory = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
  if (!contiguous_already && memory > 0 && bytes > memory)
    throw out_of_memory("(" + std::to_string(static_cast<long long>(bytes)) +
                        " bytes) would not fit in this machine's memory");
  FloatArray contiguous = FloatArray::ensure(a);
  if (!contiguous) throw out_of_memory("could not be made (out of memory)");
  return contiguous;
}

// The kernel layer knows no ConvError; Python callers get the module's one error type.
const IsaKernels& Isa(const std::string& name) {
  try {
    return SelectIsa(name);
  } catch (const std::invalid_argument& e) {
    throw ConvError(e.what());
  }
}

// More threads than this is a mistake, not a machine (and each one costs a stack).
constexpr int kMaxThreads = 1024;

void CheckThreads(int threads) {
  if (threads < 1 || threads > kMaxThreads)
    throw ConvError("threads must be between 1 and " + std::to_string(kMaxThreads) + ", got " +
                    std::to_string(threads));
}


ConvAttributes Attributes(const std::string& auto_pad, const Ints& dilations, int64_t group, const Ints& kernel_shape,
                          const Ints& pads, const Ints& strides) {
  ConvAttributes a;
  a.auto_pad = auto_pad;
  a.dilations = dilations.value_or(std::vector<int64_t>{});
  a.group = group;
  a.kernel_shape = kernel_shape.value_or(std::vector<int64_t>{});
  a.pads = pads.value_or(std::vector<int64_t>{});
  a.strides = strides.value_or(std::vector<int64_t>{});
  ValidateAttributes(a);
  return a;
}

py::array_t<float> Conv(const py::object& x_obj, const py::object& w_obj, const py::object& b_obj,
                        const py::object& z_obj, const std::string& auto_pad, const Ints& dilations, int64_t group,
                        const Ints& kernel_shape, const Ints& pads, const Ints& strides, const std::string& activation,
                        const std::vector<float>& activation_params, const std::string& isa, int threads,
                        const std::string& tiles, int channel_vectors, const std::string& layout,
                        const std::string& input_layout, const std::string& algorithm) {
  const ConvAttributes attrs = Attributes(auto_pad, dilations, group, kernel_shape, pads, strides);
  CheckThreads(threads);
  const bool nhwc = ParseLayout(layout) == Layout::kNhwc;
  const bool x_nchw = ParseInputLayout(input_layout, nhwc);
  const ConvAlgorithm asked = ParseConvAlgorithm(algorithm);
  if (!nhwc && asked == ConvAlgorithm::kWinograd) throw ConvError("algorithm \"winograd\" needs layout NHWC");
  const Epilogue epilogue = ParseEpilogue(activation, activation_params);
  FloatArray x = AsFloat32(x_obj, "x"), w = AsFloat32(w_obj, "w");
  const ConvShape shape = ResolveConvShape(attrs, nhwc && !x_nchw ? NhwcToNchwDims(Dims(x)) : Dims(x), Dims(w));
  const std::vector<int64_t> y_dims = nhwc ? NchwToNhwcDims(shape.output_dims()) : shape.output_dims();
  FloatArray b, z;  // stay unused (size 0) when not given
  const bool has_b = !b_obj.is_none(), has_z = !z_obj.is_none();
  if (has_b) {
    b = AsFloat32(b_obj, "b");
    if (b.ndim() != 1 || b.shape(0) != shape.out_channels)
      throw ConvError("b must have shape [" + std::to_string(shape.out_channels) + "], got " + DimsToString(Dims(b)));
  }
  if (has_z) {
    z = AsFloat32(z_obj, "z");
    if (Dims(z) != y_dims)
      throw ConvError("z must have the output's shape " + DimsToString(y_dims) + ", got " + DimsToString(Dims(z)));
  }
  const IsaKernels& kernels = Isa(isa);
  const TilePreference preference = SelectTilePreference(tiles);
  py::array_t<float> y(y_dims);
  if (y.size() == 0) return y;
  if (nhwc && UseWinograd(asked, shape, x_nchw)) {
    py::gil_scoped_release release;
    const WinogradPlan plan = MakeWinogradPlan(shape, epilogue, kernels, threads);
    std::vector<float> u(WinogradPackedFloats(shape, plan.tile));
    PackWeightsWinograd(shape, plan.tile, w.data(), false, u.data());
    RunWinogradNhwc(plan, x.data(), u.data(), has_b ? b.data() : nullptr, has_z ? z.data() : nullptr,
                    y.mutable_data(), ThreadRunner(threads));
    return y;
  }
  if (nhwc) {
    py::gil_scoped_release release;
    const NhwcPlan plan = MakeNhwcPlan(shape, epilogue, kernels, threads, 0, x_nchw);
    std::vector<float> packed(PackedNhwcFloats(plan));
    PackWeightsNhwc(plan, w.data(), packed.data());
    RunConvNhwc(plan, x.data(), packed.data(), has_b ? b.data() : nullptr, has_z ? z.data() : nullptr,
                y.mutable_data(), ThreadRunner(threads));
    return y;
  }
  std::vector<float> packed(w.size());
  {
    py::gil_scoped_release release;
    const ConvPlan plan = MakeConvPlan(shape, epilogue, kernels, preference, PlanTables::kBuild, threads, channel_vectors);
    PackWeights(plan.family, w.data(), shape.out_channels, shape.group, w.size() / shape.out_channels, packed.data());
    RunConv(plan, x.data(), packed.data(), has_b ? b.data() : nullptr, has_z ? z.data() : nullptr, y.mutable_data(),
            ThreadRunner(threads));
  }
  return y;
}

ConvShape ShapeFor(const std::vector<int64_t>& x_dims, const std::vector<int64_t>& kernel_shape,
                   const std::string& auto_pad, const Ints& dilations, const Ints& pads, const Ints& strides) {
  if (x_dims.size() < 3) throw ConvError("x must have rank >= 3, got " + DimsToString(x_dims));
  std::vector<int64_t> w_dims = {1, x_dims[1]};
  w_dims.insert(w_dims.end(), kernel_shape.begin(), kernel_shape.end());
  return ResolveConvShape(Attributes(auto_pad, dilations, 1, kernel_shape, pads, strides), x_dims, w_dims);
}

// The whole-image window panel, N x C x row phases x column phases x plane_rows x row_len
// (see window_layout.h).
py::array_t<float> Transform(const py::object& x_obj, const std::vector<int64_t>& kernel_shape,
                             const std::string& auto_pad, const Ints& dilations, const Ints& pads,
                             const Ints& strides) {
  FloatArray x = AsFloat32(x_obj, "x");
  const ConvShape s = ShapeFor(Dims(x), kernel_shape, auto_pad, dilations, pads, strides);
  const WindowLayout L = MakeWindowLayout(s, s.out_h);
  py::array_t<float> out({s.batch, s.in_channels, static_cast<int64_t>(L.row_phase.size()),
                          static_cast<int64_t>(L.col_phase.size()), L.plane_rows, L.row_len});
  if (out.size() == 0) return out;
  py::gil_scoped_release release;
  const int64_t image = s.in_channels * s.in_h * s.in_w;
  for (int64_t n = 0; n < s.batch; ++n)
    BuildWindowPanel(s, L, x.data() + n * image, 0, s.out_h, out.mutable_data() + n * L.channels * L.channel_stride);
  return out;
}

py::dict Workspace(const std::vector<int64_t>& x_dims, const std::vector<int64_t>& w_dims, const std::string& auto_pad,
                   const Ints& dilations, int64_t group, const Ints& pads, const Ints& strides, const std::string& isa,
                   const std::string& tiles, int threads, int channel_vectors, std::optional<bool> read_in_place,
                   int64_t l2_bytes) {
  CheckThreads(threads);
  if (l2_bytes != 0 && (l2_bytes < kMinL2Bytes || l2_bytes > kMaxL2Bytes))
    throw ConvError("l2_bytes must be 0 (this CPU's) or between " + std::to_string(kMinL2Bytes) + " and " +
                    std::to_string(kMaxL2Bytes) + ", got " + std::to_string(l2_bytes));
  const ConvAttributes attrs = Attributes(auto_pad, dilations, group, std::nullopt, pads, strides);
  // A plan is only described here, never run: any known ISA's, as on a CPU that has it.
  const IsaKernels& kernels = [&]() -> const IsaKernels& {
    try {
      return IsaForPlanning(isa);
    } catch (const std::invalid_argument& e) {
      throw ConvError(e.what());
    }
  }();
  const TilePreference preference = SelectTilePreference(tiles);
  const DirectInput direct =
      !read_in_place.has_value() ? DirectInput::kByRule : *read_in_place ? DirectInput::kOn : DirectInput::kOff;
  ConvPlan plan;
  ConvShape s;
  {
    py::gil_scoped_release release;
    s = ResolveConvShape(attrs, x_dims, w_dims);
    plan = MakeConvPlan(s, Epilogue{}, kernels, preference, PlanTables::kSizesOnly, threads, channel_vectors, direct,
                        l2_bytes);
  }
  py::dict d;
  d["tile_family"] = TileFamilyName(plan);
  d["tile"] = TileName(plan);
  d["im2win_per_thread"] = plan.workspace_bytes();
  d["im2win_shared"] = plan.shared_bytes();  // once per call, read by every thread
  d["im2col"] = Im2colWorkspaceBytes(s);
  d["rows_per_block"] = plan.TallestBlockRows();
  d["row_blocks"] = plan.row_blocks;
  d["row_quantum"] = plan.row_quantum;  // blocks hold whole quanta of this many rows
  d["channel_chunks"] = plan.m_chunks;
  d["channel_run"] = plan.channel_run;  // input channels per run of channel tiles (0: all in one)
  d["prefetch_weights"] = plan.prefetch_weights;  // the next run's weights fetched during this one's
  d["strip_panel"] = plan.strip_panel;  // a 1x1 block copied as strips of positions (ConvPlan::StripPositions()), all channels together
  d["work_items"] = plan.work_items();
  d["threads"] = plan.threads;
  d["balance"] = plan.Balance();
  d["l2_bytes"] = PlanL2Bytes(l2_bytes);
  return d;
}

// Times the layer's candidate plans on this CPU (random X and W, `threads` std::threads), as the
// ORT op does under im2win.plan=measure, and reports each candidate and the choice.
py::dict MeasurePlan(const std::vector<int64_t>& x_dims, const std::vector<int64_t>& w_dims, const std::string& auto_pad,
                     const Ints& dilations, int64_t group, const Ints& pads, const Ints& strides, const std::string& isa,
                     int threads) {
  CheckThreads(threads);
  const ConvAttributes attrs = Attributes(auto_pad, dilations, group, std::nullopt, pads, strides);
  const IsaKernels& kernels = Isa(isa);
  const ConvShape s = ResolveConvShape(attrs, x_dims, w_dims);
  // The sizes are the caller's numbers: X, W and Y must fit in memory before anything is allocated.
  constexpr int64_t kMaxFloats = int64_t{1} << 28;
  const int64_t x_floats = CheckedMul(CheckedMul(std::max<int64_t>(1, s.batch), s.in_channels, [] { return "X"; }),
                                      s.in_h * s.in_w, [] { return "X"; });
  const int64_t w_floats = CheckedMul(s.out_channels, s.channels_per_group() * s.kernel_h * s.kernel_w, [] { return "W"; });
  const int64_t y_floats = CheckedMul(CheckedMul(std::max<int64_t>(1, s.batch), s.out_channels, [] { return "Y"; }),
                                      s.out_h * s.out_w, [] { return "Y"; });
  if (x_floats > kMaxFloats || w_floats > kMaxFloats || y_floats > kMaxFloats)
    throw ConvError("measure_plan holds X, W and Y in memory: each must be at most 2^28 floats");
  py::list candidates;
  std::vector<ConvPlan> plans;
  PlanTiming timing;
  {
    py::gil_scoped_release release;
    std::vector<float> x(x_floats), w(w_floats), y(y_floats);
    uint32_t state = 12345;  // any values will do: the time does not depend on them
    for (auto* v : {&x, &w})
      for (float& f : *v) f = static_cast<float>((state = state * 1664525u + 1013904223u) >> 8) * 0x1p-23f - 1.0f;
    plans = CandidatePlans(s, Epilogue{}, kernels, threads);
    std::vector<float> packed[2];  // by TileFamily, packed once for all its candidates
    const int64_t k = s.out_channels > 0 ? w_floats / s.out_channels : 0;
    for (const ConvPlan& plan : plans) {
      std::vector<float>& p = packed[static_cast<int>(plan.family)];
      if (p.empty() && w_floats > 0) {
        p.resize(w_floats);
        PackWeights(plan.family, w.data(), s.out_channels, s.group, k, p.data());
      }
    }
    const ParallelRunner runner = ThreadRunner(threads);
    timing = TimeCandidates(plans.size(), [&](size_t i) {
      RunConv(plans[i], x.data(), packed[static_cast<int>(plans[i].family)].data(), nullptr, nullptr, y.data(), runner);
    });
  }
  auto describe = [&](const ConvPlan& plan) {
    py::dict c;
    c["tile_family"] = TileFamilyName(plan);
    c["tile"] = TileName(plan);
    c["channel_vectors"] = plan.family == TileFamily::kChannels && !plan.depthwise ? plan.tile_vectors : 0;
    c["read_in_place"] = plan.direct;
    return c;
  };
  for (size_t i = 0; i < plans.size(); ++i) {
    py::dict c = describe(plans[i]);
    c["seconds"] = timing.seconds[i];
    candidates.append(c);
  }
  py::dict d = describe(plans[timing.chosen]);
  d["candidates"] = candidates;
  return d;
}

}  // namespace
}  // namespace im2win

PYBIND11_MODULE(_kernels, m) {
  using namespace im2win;
  using py::arg;
  m.doc() = "im2win convolution kernels on NumPy float32 arrays (the kernels of the ORT custom op)";
  m.def("conv", &Conv, arg("x"), arg("w"), arg("b") = py::none(), arg("z") = py::none(), py::kw_only(),
        arg("auto_pad") = "NOTSET", arg("dilations") = py::none(), arg("group") = 1, arg("kernel_shape") = py::none(),
        arg("pads") = py::none(), arg("strides") = py::none(), arg("activation") = "",
        arg("activation_params") = std::vector<float>{}, arg("isa") = "", arg("threads") = 1, arg("tiles") = "",
        arg("channel_vectors") = 0, arg("layout") = "NCHW", arg("input_layout") = "",
        arg("algorithm") = "auto",
        "Y = activation(conv(x, w) + b + z) with ONNX Conv attributes; x is N x C x [H x] W (layout NCHW) or "
        "N x [H x] W x C (NHWC, with y and z likewise channels-last; input_layout NCHW: x channels-first, "
        "y and z channels-last; algorithm: auto, direct or winograd, as the op's attribute), w is M x C/group x [kh x] kw. isa and tiles force a kernel (as IM2WIN_ISA and IM2WIN_TILES do), channel_vectors the "
        "vectors of channels of a channel tile (where it fits; 0: the planner's); threads > 1 runs on "
        "std::threads.");
  m.def("im2win_transform", &Transform, arg("x"), arg("kernel_shape"), py::kw_only(), arg("auto_pad") = "NOTSET",
        arg("dilations") = py::none(), arg("pads") = py::none(), arg("strides") = py::none(),
        "The im2win window panel of x for all output rows, shape N x C x row phases x column phases x "
        "panel rows x row_len (ops/window_layout.h).");
  m.def("workspace_bytes", &Workspace, arg("x_shape"), arg("w_shape"), py::kw_only(), arg("auto_pad") = "NOTSET",
        arg("dilations") = py::none(), arg("group") = 1, arg("pads") = py::none(), arg("strides") = py::none(),
        arg("isa") = "", arg("tiles") = "", arg("threads") = 1, arg("channel_vectors") = 0,
        arg("read_in_place") = py::none(), arg("l2_bytes") = 0,
        "The plan of one conv for a pool of `threads` on a core with an L2 of `l2_bytes` (0: this CPU's), for "
        "any ISA (one this CPU lacks too: the plan is described, not run): tile family and shape, rows per block, work items and "
        "their balance (the share of the pool's time spent working, less the estimated cost of lines of Y that "
        "blocks share), im2win bytes per thread and shared, beside im2col's bytes for the same layer. tiles, channel_vectors and read_in_place (a 1x1 conv "
        "reading X in place; None: the rule) ask for one plan, as measure_plan's candidates report them.");
  m.def("measure_plan", &MeasurePlan, arg("x_shape"), arg("w_shape"), py::kw_only(), arg("auto_pad") = "NOTSET",
        arg("dilations") = py::none(), arg("group") = 1, arg("pads") = py::none(), arg("strides") = py::none(),
        arg("isa") = "", arg("threads") = 1,
        "Times the layer's candidate plans (one per tile family it can use) on this CPU, as the ORT op does "
        "under the session entry im2win.plan=measure: the chosen plan (tile family, tile, channel_vectors, "
        "read_in_place: what workspace_bytes takes to describe it) and each candidate's fastest run in seconds.");
  m.def("available_isas", &AvailableIsas, "ISAs this CPU can run, best first.");
  m.def("cache_sizes", [] {
          py::dict d;
          d["l2_bytes"] = L2CacheBytes();
          d["panel_budget_bytes"] = PanelBudgetFloats() * static_cast<int64_t>(sizeof(float));
          return d;
        },
        "This core's L2 cache as the OS reports it, and the window-panel budget the plans derive from it.");
  m.def("selected_isa", [](const std::string& isa) { return std::string(Isa(isa).name); }, arg("isa") = "",
        "The ISA a conv would use (honours IM2WIN_ISA when isa is empty).");
  m.def("fma_peak_gflops",
        [](const std::string& isa, int threads, double seconds) {
          CheckThreads(threads);
          if (!(seconds > 0.0 && seconds <= 60.0))  // also refuses NaN
            throw ConvError("seconds must be > 0 and <= 60, got " + std::to_string(seconds));
          const IsaKernels& kernels = Isa(isa);
          py::gil_scoped_release release;
          return MeasureFmaPeak(kernels, threads, seconds);
        },
        arg("isa") = "", arg("threads") = 1, arg("seconds") = 0.3,
        "FP32 GFLOP/s of independent FMA chains on `threads` threads: this machine's peak for the ISA.");
  py::register_exception<ConvError>(m, "ConvError", PyExc_ValueError);
}
