// classify(image) -> top-k with the exported model, in the browser, offline: written by `mobilenets export --format web`.
//
// The preprocessing is a port of mobilenets.predict.preprocess (Python), step for step and in the same float32
// arithmetic, so that the page sees the tensor PyTorch sees: Pillow's resize (its fixed-point bilinear/bicubic
// with antialiasing), TF's central crop and bilinear resize for TF-slim weights, mean/std, ITU-R 601 luma for
// gray models. The model runs on onnxruntime-web's WebAssembly (SIMD) backend; its files sit next to this one.
//
//   import { loadClassifier } from "./classify.js";
//   const classifier = await loadClassifier();            // reads model.json and model.onnx next to this file
//   const top5 = await classifier.classify(fileOrBlobOrImage, 5);   // [{index, name, prob}, ...]

import * as ort from "./ort.wasm.min.mjs";

const HERE = new URL("./", import.meta.url);

/** Load model.json and the ONNX model next to this module. threads > 1 needs a cross-origin isolated page. */
export async function loadClassifier({ threads = 1, base = HERE } = {}) {
  const { config, session, threads: used } = await loadModel({ threads, base });
  return new Classifier(config, session, used);
}

/** model.json and an onnxruntime-web session of its model (the detector's page loads its model this way too). */
export async function loadModel({ threads = 1, base = HERE } = {}) {
  const config = await (await fetch(new URL("model.json", base))).json();
  ort.env.wasm.wasmPaths = new URL(".", base).href; // the runtime's .wasm/.mjs next to this file: no CDN
  ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? threads : 1;
  ort.env.wasm.proxy = false;
  const session = await ort.InferenceSession.create(new URL(config.model, base).href, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  return { config, session, threads: ort.env.wasm.numThreads };
}

export class Classifier {
  constructor(config, session, threads) {
    this.config = config;
    this.session = session;
    this.threads = threads;
    this.inputName = session.inputNames[0];
    this.outputName = session.outputNames[0];
  }

  /** Top-k classes of an image (File, Blob, ImageBitmap, HTMLImageElement or canvas): [{index, name, prob}]. */
  async classify(image, k = 5) {
    const { logits } = await this.run(image);
    return topk(softmax(logits), k, this.config.classes);
  }

  /** The model's input tensor (Float32Array, C×R×R) and logits (Float32Array) for one image. */
  async run(image) {
    const input = preprocess(await rgbPixels(image), this.config.preprocessing, this.config.in_chans);
    const logits = await this.logits(input, 1);
    return { input, logits };
  }

  /** Logits (Float32Array, batch × classes) of an already preprocessed NCHW float32 batch. */
  async logits(data, batch) {
    const { resolution } = this.config.preprocessing;
    const tensor = new ort.Tensor("float32", data, [batch, this.config.in_chans, resolution, resolution]);
    const out = await this.session.run({ [this.inputName]: tensor });
    return out[this.outputName].data;
  }
}

// --- decoding ----------------------------------------------------------------------------------------------

/** {width, height, data: Uint8Array RGB} of an image, EXIF rotation applied, transparency over white. */
export async function rgbPixels(image) {
  const options = { colorSpaceConversion: "none", premultiplyAlpha: "none", imageOrientation: "from-image" };
  const bitmap = image instanceof ImageBitmap ? image : await createImageBitmap(image, options);
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", { colorSpace: "srgb" });
  ctx.drawImage(bitmap, 0, 0); // same size: no resampling, the decoder's pixels as they are
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height, { colorSpace: "srgb" }).data;
  const n = bitmap.width * bitmap.height;
  const rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const a = rgba[4 * i + 3];
    for (let c = 0; c < 3; c++) {
      const v = rgba[4 * i + c];
      rgb[3 * i + c] = a === 255 ? v : Math.round((v * a + 255 * (255 - a)) / 255);
    }
  }
  return { width: bitmap.width, height: bitmap.height, data: rgb };
}

// --- preprocessing: mobilenets.predict.preprocess ------------------------------------------------------------

const f32 = Math.fround;

/** RGB pixels -> Float32Array (in_chans × R × R), exactly as mobilenets.predict.preprocess (+ luma for gray). */
export function preprocess(image, pre, inChans = 3) {
  const res = pre.resolution;
  let x; // float32 HWC, values in [0, 1]
  if (pre.crop === "central_fraction") {
    let img = toFloat(image);
    img = centralCrop(img, pre.crop_pct);
    if (pre.interpolation === "tf_bilinear") {
      x = tfResizeBilinear(img, res, res);
    } else {
      const u8 = { width: img.width, height: img.height, data: new Uint8Array(img.data.length) };
      for (let i = 0; i < img.data.length; i++) {
        u8.data[i] = Math.min(255, Math.max(0, Math.trunc(f32(f32(img.data[i] * 255) + 0.5))));
      }
      x = toFloat(pilResize(u8, res, res, pre.interpolation));
    }
  } else if (pre.crop === "resize_shorter") {
    const { width: w, height: h } = image;
    const short = Math.trunc(res / pre.crop_pct);
    const size =
      w <= h
        ? [short, Math.max(short, roundHalfEven((h * short) / w))]
        : [Math.max(short, roundHalfEven((w * short) / h)), short];
    const filter = pre.interpolation === "tf_bilinear" ? "bilinear" : pre.interpolation;
    const resized = pilResize(image, size[0], size[1], filter);
    const left = Math.floor((size[0] - res) / 2);
    const top = Math.floor((size[1] - res) / 2);
    x = toFloat(crop(resized, left, top, res, res));
  } else {
    throw new Error(`unknown crop mode ${pre.crop} in model.json`);
  }
  const mean = pre.mean.map(f32);
  const std = pre.std.map(f32);
  const plane = res * res;
  const chw = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const m = mean[c % mean.length];
      const s = std[c % std.length];
      chw[c * plane + i] = f32(f32(x.data[3 * i + c] - m) / s);
    }
  }
  if (inChans === 3) return chw;
  // A gray model: ITU-R 601 luma of the normalized channels, as mobilenets.predict does.
  const luma = [0.299, 0.587, 0.114].map(f32);
  const gray = new Float32Array(plane);
  for (let i = 0; i < plane; i++) {
    const r = f32(chw[i] * luma[0]);
    const g = f32(chw[plane + i] * luma[1]);
    const b = f32(chw[2 * plane + i] * luma[2]);
    gray[i] = f32(f32(r + g) + b);
  }
  return gray;
}

function roundHalfEven(v) {
  // Python's round(): ties to even.
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export function toFloat(image) {
  const out = new Float32Array(image.data.length);
  for (let i = 0; i < out.length; i++) out[i] = f32(image.data[i] / 255);
  return { width: image.width, height: image.height, data: out };
}

function crop(image, left, top, width, height) {
  const Type = image.data.constructor;
  const out = new Type(width * height * 3);
  for (let y = 0; y < height; y++) {
    const row = ((top + y) * image.width + left) * 3;
    out.set(image.data.subarray(row, row + width * 3), y * width * 3);
  }
  return { width, height, data: out };
}

function centralCrop(image, fraction) {
  // tf.image.central_crop: keep the central fraction of each side, start rounded down.
  const { width: w, height: h } = image;
  const top = Math.trunc((h - h * fraction) / 2);
  const left = Math.trunc((w - w * fraction) / 2);
  return crop(image, left, top, w - 2 * left, h - 2 * top);
}

function tfResizeBilinear(image, height, width) {
  // TF1 resize_bilinear(align_corners=False): source = dest · (in/out), float32 like the NumPy port.
  const axis = (nOut, nIn) => {
    const lo = [];
    const hi = [];
    const frac = [];
    for (let i = 0; i < nOut; i++) {
      const src = i * (nIn / nOut);
      const l = Math.floor(src);
      lo.push(l);
      hi.push(Math.min(l + 1, nIn - 1));
      frac.push(f32(src - l));
    }
    return [lo, hi, frac];
  };
  const [y0, y1, fy] = axis(height, image.height);
  const [x0, x1, fx] = axis(width, image.width);
  const at = (y, x, c) => image.data[(y * image.width + x) * 3 + c];
  const out = new Float32Array(height * width * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        const tl = at(y0[y], x0[x], c);
        const bl = at(y1[y], x0[x], c);
        const top = f32(tl + f32(f32(at(y0[y], x1[x], c) - tl) * fx[x]));
        const bottom = f32(bl + f32(f32(at(y1[y], x1[x], c) - bl) * fx[x]));
        out[(y * width + x) * 3 + c] = f32(top + f32(f32(bottom - top) * fy[y]));
      }
    }
  }
  return { width, height, data: out };
}

// Pillow's Resample.c: separable convolution, horizontal pass then vertical, each rounded to uint8, with
// coefficients in fixed point (22 fractional bits). Porting it bit for bit is what makes the tensors equal.
const PRECISION_BITS = 32 - 8 - 2;
const FILTERS = {
  bilinear: { support: 1, fn: (x) => (x < 0 ? -x : x) < 1 ? 1 - (x < 0 ? -x : x) : 0 },
  bicubic: {
    support: 2,
    fn: (x) => {
      const a = -0.5;
      x = x < 0 ? -x : x;
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
};

function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.fn((x + xmin - center + 0.5) * ss);
      kk[xx * ksize + x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) if (ww !== 0) kk[xx * ksize + x] /= ww;
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  const fixed = new Float64Array(kk.length);
  for (let i = 0; i < kk.length; i++) {
    const v = kk[i] * (1 << PRECISION_BITS);
    fixed[i] = kk[i] < 0 ? Math.trunc(-0.5 + v) : Math.trunc(0.5 + v);
  }
  return { ksize, bounds, k: fixed };
}

function clip8(ss) {
  const v = Math.floor(ss / (1 << PRECISION_BITS));
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Pillow's Image.resize((width, height), BILINEAR or BICUBIC) of an RGB uint8 image. */
export function pilResize(image, width, height, interpolation = "bilinear") {
  const filter = FILTERS[interpolation];
  if (!filter) throw new Error(`unknown interpolation ${interpolation} in model.json`);
  if (width === image.width && height === image.height) return image;
  let src = image;
  if (width !== image.width) {
    const { ksize, bounds, k } = coefficients(image.width, width, filter);
    const out = new Uint8Array(width * image.height * 3);
    for (let y = 0; y < image.height; y++) {
      for (let xx = 0; xx < width; xx++) {
        const xmin = bounds[2 * xx];
        const xmax = bounds[2 * xx + 1];
        for (let c = 0; c < 3; c++) {
          let ss = 1 << (PRECISION_BITS - 1);
          for (let x = 0; x < xmax; x++) ss += image.data[(y * image.width + x + xmin) * 3 + c] * k[xx * ksize + x];
          out[(y * width + xx) * 3 + c] = clip8(ss);
        }
      }
    }
    src = { width, height: image.height, data: out };
  }
  if (height !== src.height) {
    const { ksize, bounds, k } = coefficients(src.height, height, filter);
    const out = new Uint8Array(width * height * 3);
    for (let yy = 0; yy < height; yy++) {
      const ymin = bounds[2 * yy];
      const ymax = bounds[2 * yy + 1];
      for (let x = 0; x < width; x++) {
        for (let c = 0; c < 3; c++) {
          let ss = 1 << (PRECISION_BITS - 1);
          for (let y = 0; y < ymax; y++) ss += src.data[((y + ymin) * width + x) * 3 + c] * k[yy * ksize + y];
          out[(yy * width + x) * 3 + c] = clip8(ss);
        }
      }
    }
    src = { width, height, data: out };
  }
  return src;
}

// --- scores --------------------------------------------------------------------------------------------------

export function softmax(logits) {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  const e = Array.from(logits, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

export function topk(probs, k, classes) {
  return probs
    .map((prob, index) => ({ index, name: classes[index] ?? `class ${index}`, prob }))
    .sort((a, b) => b.prob - a.prob)
    .slice(0, k);
}
