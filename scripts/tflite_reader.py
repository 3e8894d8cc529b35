"""Minimal reader for TensorFlow Lite flatbuffers (schema.fbs), enough for convolutional
classifiers: tensors with shapes, types, quantisation and constant data; operators with their
builtin options. No flatbuffers package is available here, so the format is read directly:
https://github.com/tensorflow/tensorflow/blob/master/tensorflow/lite/schema/schema.fbs
"""
import struct

import numpy as np

# BuiltinOperator codes used by MobileNet-style graphs.
OPS = {0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
       6: "DEQUANTIZE", 14: "LOGISTIC", 17: "MAX_POOL_2D", 19: "RELU", 21: "RELU6", 22: "RESHAPE",
       25: "SOFTMAX", 40: "MEAN", 114: "QUANTIZE"}
# TensorType -> numpy dtype
TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}
ACTIVATIONS = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}
PADDING = {0: "SAME", 1: "VALID"}


class Table:
    """A flatbuffer table at byte offset `pos` of `buf`."""

    def __init__(self, buf, pos):
        self.buf, self.pos = buf, pos
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_size = struct.unpack_from("<H", buf, vtable)[0]
        self.vtable = vtable

    def _field(self, index):
        off = 4 + 2 * index
        if off >= self.vt_size:
            return 0
        return struct.unpack_from("<H", self.buf, self.vtable + off)[0]

    def scalar(self, index, fmt, default=0):
        off = self._field(index)
        return default if off == 0 else struct.unpack_from("<" + fmt, self.buf, self.pos + off)[0]

    def _indirect(self, index):
        off = self._field(index)
        if off == 0:
            return None
        p = self.pos + off
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def table(self, index):
        p = self._indirect(index)
        return None if p is None else Table(self.buf, p)

    def string(self, index):
        p = self._indirect(index)
        if p is None:
            return None
        n = struct.unpack_from("<I", self.buf, p)[0]
        return bytes(self.buf[p + 4:p + 4 + n]).decode("utf-8")

    def vector(self, index, fmt):
        p = self._indirect(index)
        if p is None:
            return []
        n = struct.unpack_from("<I", self.buf, p)[0]
        return list(struct.unpack_from("<%d%s" % (n, fmt), self.buf, p + 4))

    def bytes_vector(self, index):
        p = self._indirect(index)
        if p is None:
            return b""
        n = struct.unpack_from("<I", self.buf, p)[0]
        return bytes(self.buf[p + 4:p + 4 + n])

    def tables(self, index):
        p = self._indirect(index)
        if p is None:
            return []
        n = struct.unpack_from("<I", self.buf, p)[0]
        out = []
        for i in range(n):
            e = p + 4 + 4 * i
            out.append(Table(self.buf, e + struct.unpack_from("<I", self.buf, e)[0]))
        return out


class Tensor:
    def __init__(self, t, buffers):
        self.shape = t.vector(0, "i")
        self.type = TYPES.get(t.scalar(1, "b"))
        self.name = t.string(3)
        data = buffers[t.scalar(2, "I")].bytes_vector(0) if t.scalar(2, "I") < len(buffers) else b""
        self.data = np.frombuffer(data, dtype=self.type).reshape(self.shape) if data else None
        q = t.table(4)
        self.scale = np.array(q.vector(2, "f"), dtype=np.float64) if q else np.array([])
        self.zero_point = np.array(q.vector(3, "q"), dtype=np.int64) if q else np.array([])
        self.quantized_dimension = q.scalar(6, "i") if q else 0

    def dequantized(self):
        """Constant data as float32: scale * (q - zero_point), per tensor or per channel."""
        if self.data is None:
            raise ValueError("tensor %s has no constant data" % self.name)
        if self.type in (np.float32, np.float16):
            return self.data.astype(np.float32)
        if self.scale.size == 0:
            raise ValueError("tensor %s is integer but has no quantisation parameters" % self.name)
        q = self.data.astype(np.float64)
        shape = [1] * q.ndim
        if self.scale.size > 1:
            shape[self.quantized_dimension] = -1
        scale = self.scale.reshape(shape)
        zp = (self.zero_point if self.zero_point.size else np.zeros(1)).reshape(shape if self.scale.size > 1 else [1] * q.ndim)
        return (scale * (q - zp)).astype(np.float32)


class Operator:
    def __init__(self, op, opcodes):
        code = opcodes[op.scalar(0, "I")]
        # builtin_code (field 3, int32) supersedes deprecated_builtin_code (field 0, int8).
        builtin = max(code.scalar(0, "b"), code.scalar(3, "i"))
        self.type = OPS.get(builtin, "BUILTIN_%d" % builtin)
        self.inputs = op.vector(1, "i")
        self.outputs = op.vector(2, "i")
        o = op.table(4)
        self.options = {}
        if o is None:
            return
        if self.type == "CONV_2D":
            self.options = dict(padding=PADDING[o.scalar(0, "b")], stride_w=o.scalar(1, "i"), stride_h=o.scalar(2, "i"),
                                activation=ACTIVATIONS[o.scalar(3, "b")], dilation_w=o.scalar(4, "i", 1),
                                dilation_h=o.scalar(5, "i", 1))
        elif self.type == "DEPTHWISE_CONV_2D":
            self.options = dict(padding=PADDING[o.scalar(0, "b")], stride_w=o.scalar(1, "i"), stride_h=o.scalar(2, "i"),
                                depth_multiplier=o.scalar(3, "i"), activation=ACTIVATIONS[o.scalar(4, "b")],
                                dilation_w=o.scalar(5, "i", 1), dilation_h=o.scalar(6, "i", 1))
        elif self.type in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            self.options = dict(padding=PADDING[o.scalar(0, "b")], stride_w=o.scalar(1, "i"), stride_h=o.scalar(2, "i"),
                                filter_w=o.scalar(3, "i"), filter_h=o.scalar(4, "i"),
                                activation=ACTIVATIONS[o.scalar(5, "b")])
        elif self.type == "ADD":
            self.options = dict(activation=ACTIVATIONS[o.scalar(0, "b")])


class Model:
    def __init__(self, path):
        with open(path, "rb") as f:
            buf = f.read()
        if buf[4:8] != b"TFL3":
            raise ValueError("%s is not a TFLite model (file identifier %r, expected b'TFL3')" % (path, buf[4:8]))
        root = Table(buf, struct.unpack_from("<I", buf, 0)[0])
        self.version = root.scalar(0, "I")
        opcodes = root.tables(1)
        buffers = root.tables(4)
        subgraphs = root.tables(2)
        if len(subgraphs) != 1:
            raise ValueError("%s: expected one subgraph, found %d" % (path, len(subgraphs)))
        g = subgraphs[0]
        self.tensors = [Tensor(t, buffers) for t in g.tables(0)]
        self.inputs = g.vector(1, "i")
        self.outputs = g.vector(2, "i")
        self.operators = [Operator(o, opcodes) for o in g.tables(3)]
