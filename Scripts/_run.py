"""What several scripts in Scripts/ need to start gemma-node and llama.cpp the same way."""
import os


def mpirun_prefix(ranks):
    """`mpirun` for `ranks` ranks on one host: oversubscribed (more ranks than cores is normal
    here), unbound (each rank runs its own thread pool), allowed as root (CI containers)."""
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd + ["-n", str(ranks)]


def llama_without_extra_buffer_types():
    """llama.cpp's "extra buffer types" (AMX tiles, weight repacking) switched off in every
    model llama-cpp-python loads from now on: on these VMs the CPU reports AMX but executing a
    tile instruction raises SIGILL. The plain ggml CPU kernels remain."""
    import llama_cpp
    default = llama_cpp.llama_cpp.llama_model_default_params

    def patched():
        params = default()
        params.use_extra_bufts = False
        return params

    llama_cpp.llama_cpp.llama_model_default_params = patched
