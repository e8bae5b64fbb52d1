// fnmesh-python-zygote: a python3 runtime initialised once (interpreter, shim.py, the
// generated fnmesh.proto package) that makes spare sandboxes (node/sandbox/zygote.h): each
// is a copy of it with its pages copied in ahead, so a python cold start costs the
// sandbox's assignment and the handler's import instead of an interpreter start and a
// fork (DESIGN §5). In the sandbox, the copy runs shim.serve_in_sandbox(handler, env).
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "node/sandbox/zygote.h"

namespace {

using namespace fnmesh::node;

// In the sandbox: hands over to the shim, never returns.
[[noreturn]] void serve(PyObject* serve_in_sandbox, const runtime_assignment& a) {
  PyOS_AfterFork_Child();
  PyObject* env = PyList_New(0);
  for (const auto& e : a.env) {
    PyObject* s = PyUnicode_DecodeUTF8(e.data(), Py_ssize_t(e.size()), "replace");
    PyList_Append(env, s);
    Py_DECREF(s);
  }
  PyObject* code = PyObject_CallFunction(serve_in_sandbox, "sO", a.handler.c_str(), env);
  int status = 0;
  if (!code) {
    PyErr_Print();
    status = 1;
  } else {
    status = int(PyLong_AsLong(code));
  }
  std::fflush(nullptr);
  ::_exit(status);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fnmesh-python-zygote: makes spare sandboxes with a pre-initialised python3 runtime (started by fnmesh-node)"};
  std::string shim_dir, proto_dir, staging;
  app.add_option("--shim-dir", shim_dir, "folder of shim.py")->required();
  app.add_option("--proto-dir", proto_dir, "folder of the generated fnmesh.proto package")->required();
  app.add_option("--staging", staging, "the node's staging directory")->required();
  CLI11_PARSE(app, argc, argv);

  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 0;
  config.write_bytecode = 0;
  config.user_site_directory = 0;
  config.buffered_stdio = 0;
  config.parse_argv = 0;
  PyStatus st = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(st)) Py_ExitStatusException(st);
  PyObject* sys_path = PySys_GetObject("path");
  for (const std::string& dir : {shim_dir, proto_dir}) {
    PyObject* s = PyUnicode_FromString(dir.c_str());
    PyList_Insert(sys_path, 0, s);
    Py_DECREF(s);
  }
  PyObject* shim = PyImport_ImportModule("shim");
  PyObject* serve_in_sandbox = shim ? PyObject_GetAttrString(shim, "serve_in_sandbox") : nullptr;
  if (!serve_in_sandbox) {
    PyErr_Print();
    return 1;
  }
  const zygote_runtime runtime{.before_clone = PyOS_BeforeFork,
                               .after_clone = PyOS_AfterFork_Parent,
                               .serve = [&](runtime_assignment a) { serve(serve_in_sandbox, a); }};
  return serve_zygote({.staging = staging, .prefault = true, .runtime = &runtime});
}
