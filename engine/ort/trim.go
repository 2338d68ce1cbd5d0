package ort

// #include <malloc.h>
import "C"

// trimNativeHeap returns the C heap's free memory to the operating system. ONNX Runtime frees
// a closed session's weights and arena with free(); glibc keeps much of that in its arenas, so
// without a trim the resident size of a daemon that reloads models creeps up with every
// reload.
func trimNativeHeap() { C.malloc_trim(0) }
