// The JavaScript runner's test driver: trusted code that node runs before the program.
//
// Bound read-only into the sandbox at /run/unitcoder/js_driver.mjs; the zygote execs
//   node FLAGS js_driver.mjs RESULT_FD NONCE_FD PROGRAM_FILE LOCATIONS_JSON TRACE_CHARS
// inside the program's isolated process (sandbox/_isolation.py). Before any code of the
// program exists, it
//   * reads the nonce from NONCE_FD and closes it, keeping the nonce only XOR-masked
//     with random bytes (so a scan of the process's memory finds no copy of it);
//   * captures every function it will call later (the program may patch globals);
//   * freezes node:test and node:assert (and assert/strict), so the program cannot
//     replace what its tests call, and disables what could read this process's memory
//     or compile code under the program's file name (v8 heap snapshots and flags, the
//     inspector, process.binding);
//   * starts node:test's runner in this process (run({isolation: "none"})) on the program
//     file and installs its own `emit` on the runner's event stream, which the harness
//     calls directly for each test's result: the program can reach neither the stream
//     nor this function.
// A test counts only if it was declared at one of the places the host found statically
// (LOCATIONS_JSON: [[line, column], ...]), and once. When the stream ends, the driver
// writes the nonce and the result (JSON, escaped by hand to ASCII) to RESULT_FD and
// ends the process at once, so no program code runs while the nonce is unmasked.
import { createRequire, syncBuiltinESMExports } from "node:module";

const require = createRequire(import.meta.url);
const fs = require("node:fs");
const crypto = require("node:crypto");
const events = require("node:events");
const nodeTest = require("node:test");
const assert = require("node:assert");
const assertStrict = require("node:assert/strict");
const v8 = require("node:v8");
const inspector = require("node:inspector");

const ReflectApply = Reflect.apply;
const ObjectFreeze = Object.freeze;
const ObjectDefineProperty = Object.defineProperty;
const ObjectGetOwnPropertyNames = Object.getOwnPropertyNames;
const ObjectGetOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
const ObjectHasOwn = Object.hasOwn;
const StringFromCharCode = String.fromCharCode;
const StringPrototypeCharCodeAt = String.prototype.charCodeAt;
const StringPrototypeSlice = String.prototype.slice;
const NumberIsInteger = Number.isInteger;
const JSONParse = JSON.parse;
const readSync = fs.readSync;
const writeSync = fs.writeSync;
const closeSync = fs.closeSync;
const proc = process;
const reallyExitOriginal = process.reallyExit;
function reallyExit(code) {
  ReflectApply(reallyExitOriginal, proc, [code]);
}
const EmitOriginal = events.EventEmitter.prototype.emit;
const ErrorPrototypeToString = Error.prototype.toString;

const args = process.argv;
const resultFd = +args[2];
const nonceFd = +args[3];
const programFile = args[4];
const expectedList = JSONParse(args[5]);
const traceChars = +args[6] || 2000;

// --- the nonce, masked ---------------------------------------------------------------
const NONCE_BYTES = 64;
const mask = new Uint8Array(crypto.randomBytes(NONCE_BYTES));
const masked = new Uint8Array(NONCE_BYTES);
{
  const raw = new Uint8Array(NONCE_BYTES);
  let got = 0;
  while (got < NONCE_BYTES) {
    const n = readSync(nonceFd, raw, got, NONCE_BYTES - got, null);
    if (n <= 0) reallyExit(75);
    got += n;
  }
  for (let i = 0; i < NONCE_BYTES; i++) {
    masked[i] = raw[i] ^ mask[i];
    raw[i] = 0;
  }
  closeSync(nonceFd);
}

// --- where tests may be declared -----------------------------------------------------
const expected = { __proto__: null };
for (let i = 0; i < expectedList.length; i++) {
  expected[expectedList[i][0] + ":" + expectedList[i][1]] = 0;
}

// --- freezing the test machinery, disabling memory access -----------------------------
const intrinsics = new Set([Function.prototype, Object.prototype, Array.prototype, Error.prototype]);
function deepFreeze(value, seen) {
  if ((typeof value !== "object" && typeof value !== "function") || value === null) return;
  if (intrinsics.has(value) || seen.has(value)) return;
  seen.add(value);
  for (const key of ObjectGetOwnPropertyNames(value)) {
    if (typeof value === "function" && key === "prototype") continue; // instances may set their own fields
    const desc = ObjectGetOwnPropertyDescriptor(value, key);
    if (desc && "value" in desc) deepFreeze(desc.value, seen);
  }
  ObjectFreeze(value);
}
function refused(name) {
  return function () {
    throw new Error(`${name} is not available in the sandbox`);
  };
}
for (const name of ["getHeapSnapshot", "writeHeapSnapshot", "setFlagsFromString", "getHeapCodeStatistics"]) {
  if (name in v8) v8[name] = refused(`v8.${name}`);
}
for (const name of ["open", "Session", "url", "waitForDebugger"]) {
  if (name in inspector) inspector[name] = refused(`inspector.${name}`);
}
for (const name of ["binding", "_linkedBinding", "dlopen", "_debugProcess"]) {
  ObjectDefineProperty(process, name, { value: refused(`process.${name}`), writable: false, configurable: false });
}
syncBuiltinESMExports();
const seen = new Set();
for (const value of [nodeTest, assert, assertStrict, v8, inspector]) deepFreeze(value, seen);
ObjectFreeze(Buffer);

// --- the result ----------------------------------------------------------------------
const HEX = "0123456789abcdef";
function esc(text) {
  // JSON string of `text`, ASCII only, with no method of any object the program can reach.
  let s = typeof text === "string" ? text : "";
  if (s.length > traceChars) s = ReflectApply(StringPrototypeSlice, s, [0, traceChars]);
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = ReflectApply(StringPrototypeCharCodeAt, s, [i]);
    if (c >= 0x20 && c < 0x7f && c !== 0x22 && c !== 0x5c) out += StringFromCharCode(c);
    else out += "\\u" + HEX[(c >> 12) & 15] + HEX[(c >> 8) & 15] + HEX[(c >> 4) & 15] + HEX[c & 15];
  }
  return out + '"';
}

function describeError(error) {
  try {
    let err = error;
    if (err !== null && typeof err === "object" && ObjectHasOwn(err, "cause") && err.code === "ERR_TEST_FAILURE") {
      err = err.cause;
    }
    if (err !== null && typeof err === "object") {
      const stack = ObjectGetOwnPropertyDescriptor(err, "stack");
      if (stack && typeof stack.value === "string") return stack.value;
      return ReflectApply(ErrorPrototypeToString, err, []);
    }
    return "thrown: " + typeof err;
  } catch {
    return "(the error could not be described)";
  }
}

function isOom(error) {
  try {
    const err = error && error.code === "ERR_TEST_FAILURE" ? error.cause : error;
    const text = describeError(err);
    return text.indexOf("RangeError") === 0 && (text.indexOf("allocation failed") >= 0 || text.indexOf("Invalid array length") >= 0 || text.indexOf("Invalid typed array length") >= 0 || text.indexOf("Invalid string length") >= 0);
  } catch {
    return false;
  }
}

let records = "";
let started = 0;
let loadError = null;
let finished = false;
// Errors the runner caught outside any test (an uncaught exception or an unhandled
// rejection after a test ended): the runner says so in a diagnostic and in a summary
// whose `success` is false, with every test passed. The program fails, as it would
// when run with node.
let outsideErrors = "";
let runFailed = false;
let failedRecords = 0;

function record(name, outcome, trace) {
  if (outcome !== "pass") failedRecords += 1;
  records += (records ? "," : "") + "[" + esc(name) + "," + esc(outcome) + "," + esc(trace) + "]";
}

function onRunReport(type, data) {
  if (data === null || typeof data !== "object") return;
  if (type === "test:summary") {
    if (data.success === false) runFailed = true;
  } else if (data.nesting === 0 && typeof data.message === "string" && data.message.indexOf("Error: ") === 0) {
    outsideErrors += (outsideErrors ? "\n" : "") + data.message;
  }
}

function onResult(type, data) {
  if (data === null || typeof data !== "object") return;
  const details = ObjectHasOwn(data, "details") ? data.details : undefined;
  const kind = details && ObjectHasOwn(details, "type") ? details.type : "test";
  const error = details && ObjectHasOwn(details, "error") ? details.error : undefined;
  const name = typeof data.name === "string" ? data.name : "";
  if (data.nesting === 0 && name === programFile) {
    // The file itself failed: it did not load, or failed outside any test.
    if (type === "test:fail") loadError = describeError(error);
    return;
  }
  if (kind === "suite") {
    if (type === "test:fail" && !(error && ObjectHasOwn(error, "failureType") && error.failureType === "subtestsFailed")) {
      record(name, "error", "the suite failed: " + describeError(error));
    }
    return;
  }
  started += 1;
  const line = data.line;
  const column = data.column;
  const key = data.file === programFile && NumberIsInteger(line) && NumberIsInteger(column) ? line + ":" + column : null;
  if (key === null || !(key in expected) || expected[key] !== 0) {
    record(name, "error", `this test was declared at ${key === null ? "an unknown place" : "line " + line + ", column " + column}, not at one of the places where test_code declares a test (or it ran twice)`);
    return;
  }
  expected[key] = 1;
  if (type === "test:pass") {
    if (data.skip !== undefined || data.todo !== undefined) record(name, "skip", data.skip !== undefined ? "skipped" : "marked todo");
    else record(name, "pass", "");
  } else {
    record(name, isOom(error) ? "oom" : data.todo !== undefined ? "skip" : "fail", describeError(error));
  }
}

function finish() {
  if (finished) return;
  finished = true;
  if (runFailed && failedRecords === 0 && loadError === null) {
    loadError = outsideErrors || "the test runner reported a failure outside any test";
  }
  let body = '{"load_error":' + (loadError !== null && started === 0 ? esc(loadError) : "null");
  body += ',"load_error_kind":' + (loadError !== null && started === 0 ? '"error"' : "null");
  body += ',"records":[' + (loadError !== null && started > 0 ? records + (records ? "," : "") + "[" + esc("(outside any test)") + ',"error",' + esc(loadError) + "]" : records) + "]";
  body += ',"started":' + started + ',"tamper":[]}';
  let nonce = "";
  for (let i = 0; i < NONCE_BYTES; i++) nonce += StringFromCharCode(masked[i] ^ mask[i]);
  let data = nonce + body;
  while (data.length > 0) {
    const n = writeSync(resultFd, data);
    data = ReflectApply(StringPrototypeSlice, data, [n]);
  }
  closeSync(resultFd);
  reallyExit(0);
}

// --- the run -------------------------------------------------------------------------
const stream = nodeTest.run({ files: [programFile], isolation: "none" });
ObjectDefineProperty(stream, "emit", {
  value: function emit(type, data) {
    if (type === "test:pass" || type === "test:fail") {
      try {
        onResult(type, data);
      } catch {
        record("(the driver)", "error", "a test's result could not be read");
      }
    } else if (type === "test:summary" || type === "test:diagnostic") {
      try {
        onRunReport(type, data);
      } catch {
        runFailed = true;
      }
    } else if (type === "end") {
      finish();
    }
    return ReflectApply(EmitOriginal, this, arguments);
  },
  writable: false,
  configurable: false,
});
stream.resume();
