// detect(image) -> boxes, labels and scores with the exported detector, in the browser, offline: written by
// `mobilenets export --format web` for a detector (SSD, SSDLite).
//
// model.onnx holds the whole detector: normalization, backbone, head, box decoding against the anchors, softmax,
// each class's top-k and ONNX NonMaxSuppression; it takes (1, 3, H, W) RGB in [0, 1] and gives boxes (K, 4)
// x1y1x2y2 in input pixels, labels (K,) and scores (K,), best first. This file does what the Python runner
// (mobilenets.deploy.detection.file_detector) does around it, in the same float32 arithmetic: the whole image
// resized to W×H as PyTorch's F.interpolate(mode="bilinear", align_corners=False) does it (no antialias, no
// letterbox: the aspect ratio is not kept), and the boxes scaled back by (image size / input size) per axis.
//
//   import { loadDetector } from "./detect.js";
//   const detector = await loadDetector();                   // reads model.json and model.onnx next to this file
//   const found = await detector.detect(fileOrBlobOrImage);   // [{box: [x1, y1, x2, y2], label, name, score}, ...]

import * as ort from "./ort.wasm.min.mjs";
import { loadModel, rgbPixels, toFloat } from "./classify.js";

const HERE = new URL("./", import.meta.url);
const f32 = Math.fround;

/** Load model.json and the ONNX detector next to this module. threads > 1 needs a cross-origin isolated page. */
export async function loadDetector({ threads = 1, base = HERE } = {}) {
  const { config, session, threads: used } = await loadModel({ threads, base });
  if (config.task !== "detection") throw new Error("model.json is not a detector's (task is not detection)");
  return new Detector(config, session, used);
}

export class Detector {
  constructor(config, session, threads) {
    this.config = config;
    this.session = session;
    this.threads = threads;
    [, , this.height, this.width] = config.input;
  }

  /** Detections scoring ≥ minScore in the image's own pixels: [{box: [x1, y1, x2, y2], label, name, score}]. */
  async detect(image, minScore = this.config.thresholds.show) {
    return (await this.run(image)).detections.filter((d) => d.score >= minScore);
  }

  /** Everything about one image: its size, the model's input (Float32Array 3×H×W), the file's outputs in input
   * pixels, and the detections in the image's pixels (all of them, best first). */
  async run(image) {
    const pixels = await rgbPixels(image);
    const input = resizeBilinear(toFloat(pixels), this.height, this.width);
    const out = await this.raw(input);
    const boxes = toOriginal(out.boxes, [this.height, this.width], [pixels.height, pixels.width]);
    const detections = out.scores.map((score, i) => ({
      box: Array.from(boxes.subarray(4 * i, 4 * i + 4)),
      label: out.labels[i],
      name: this.config.classes?.[out.labels[i] - 1] ?? `class ${out.labels[i]}`,
      score,
    }));
    return { width: pixels.width, height: pixels.height, input, ...out, detections };
  }

  /** The file's outputs for an input already at its size (Float32Array 1×3×H×W, [0, 1]): boxes in input pixels
   * (Float32Array K×4), labels and scores (arrays of K numbers), best first. */
  async raw(data) {
    const tensor = new ort.Tensor("float32", data, [1, 3, this.height, this.width]);
    const out = await this.session.run({ [this.session.inputNames[0]]: tensor });
    return {
      boxes: out.boxes.data,
      labels: Array.from(out.labels.data, Number), // int64: BigInt64Array
      scores: Array.from(out.scores.data),
    };
  }
}

// --- PyTorch's bilinear resize (upsample_bilinear2d, align_corners=False, no antialias), float32 -------------

function axis(inSize, outSize) {
  // aten's area_pixel_compute_source_index and guard_index_and_lambda, in float32.
  const scale = f32(inSize / outSize);
  const lo = new Int32Array(outSize);
  const hi = new Int32Array(outSize);
  const w0 = new Float32Array(outSize);
  const w1 = new Float32Array(outSize);
  for (let i = 0; i < outSize; i++) {
    let src = f32(f32(scale * (i + 0.5)) - 0.5);
    if (src < 0) src = 0;
    const l = Math.min(Math.floor(src), inSize - 1);
    const lambda = Math.min(Math.max(f32(src - l), 0), 1);
    lo[i] = l;
    hi[i] = l < inSize - 1 ? l + 1 : l;
    w1[i] = lambda;
    w0[i] = f32(1 - lambda);
  }
  return { lo, hi, w0, w1 };
}

/** A float32 HWC RGB image resized to height×width as PyTorch does it: Float32Array CHW (3×height×width). */
export function resizeBilinear(image, height, width) {
  const ys = axis(image.height, height);
  const xs = axis(image.width, width);
  const src = image.data;
  const at = (y, x, c) => src[(y * image.width + x) * 3 + c];
  const plane = height * width;
  const out = new Float32Array(3 * plane);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        // Rows first, then columns: aten's Interpolate<2> weighs two column-interpolated rows.
        const row = (yy) => f32(f32(at(yy, xs.lo[x], c) * xs.w0[x]) + f32(at(yy, xs.hi[x], c) * xs.w1[x]));
        out[c * plane + y * width + x] = f32(f32(row(ys.lo[y]) * ys.w0[y]) + f32(row(ys.hi[y]) * ys.w1[y]));
      }
    }
  }
  return out;
}

/** Boxes (K×4, input pixels) × (image size / input size) per axis: torchvision's resize_boxes, float32. */
export function toOriginal(boxes, [inHeight, inWidth], [height, width]) {
  const rh = f32(height / inHeight);
  const rw = f32(width / inWidth);
  const out = new Float32Array(boxes.length);
  for (let i = 0; i < boxes.length; i += 4) {
    out[i] = f32(boxes[i] * rw);
    out[i + 1] = f32(boxes[i + 1] * rh);
    out[i + 2] = f32(boxes[i + 2] * rw);
    out[i + 3] = f32(boxes[i + 3] * rh);
  }
  return out;
}
