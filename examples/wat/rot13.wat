;; rot13: a job written by hand in the WebAssembly text format, with no SDK
;; and no compiler, to show that any WASI preview-1 command module is a job.
;;
;; It copies stdin to stdout, rotating the ASCII letters by 13 places
;; (A<->N, b<->o, ...); every other byte, UTF-8 included, passes unchanged.
;; Running it twice gives back the input.
;;
;;   agora exec examples/wat/rot13.wat --input FILE
;;
;; The node accepts the .wat text as it is and compiles it; it imports only
;; fd_read, fd_write and proc_exit.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param $fd i32) (param $iovs i32) (param $iovs_len i32) (param $nread i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param $fd i32) (param $iovs i32) (param $iovs_len i32) (param $nwritten i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param $code i32)))

  ;; One page. 0..8: an iovec {buf, len}; 8..12: bytes read or written;
  ;; 1024..1024+32768: the buffer.
  (memory (export "memory") 1)
  (global $buf i32 (i32.const 1024))
  (global $buf_len i32 (i32.const 32768))

  ;; Rotates one byte.
  (func $rot13 (param $c i32) (result i32)
    (local $lower i32)
    ;; Setting bit 0x20 maps 'A'..'Z' onto 'a'..'z' and no other byte into that range.
    (local.set $lower (i32.or (local.get $c) (i32.const 0x20)))
    (if (result i32)
      (i32.and
        (i32.ge_u (local.get $lower) (i32.const 0x61))   ;; 'a'
        (i32.le_u (local.get $lower) (i32.const 0x7a)))  ;; 'z'
      (then
        ;; ((lower - 'a' + 13) mod 26 + 'a'), then back to upper case if the
        ;; input was: flip bit 0x20 exactly when it was clear in the input.
        (i32.xor
          (i32.add
            (i32.rem_u (i32.add (i32.sub (local.get $lower) (i32.const 0x61)) (i32.const 13)) (i32.const 26))
            (i32.const 0x61))
          (i32.xor (i32.and (local.get $c) (i32.const 0x20)) (i32.const 0x20))))
      (else (local.get $c))))

  (func (export "_start")
    (local $n i32)
    (local $i i32)
    (local $done i32)
    (loop $read
      ;; Read up to a buffer's worth of stdin.
      (i32.store (i32.const 0) (global.get $buf))
      (i32.store (i32.const 4) (global.get $buf_len))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $proc_exit (i32.const 1))))
      (local.set $n (i32.load (i32.const 8)))
      ;; End of input: return from _start, which is exit code 0.
      (if (i32.eqz (local.get $n)) (then (return)))

      (local.set $i (i32.const 0))
      (loop $rotate
        (i32.store8 offset=1024 (local.get $i)
          (call $rot13 (i32.load8_u offset=1024 (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $rotate (i32.lt_u (local.get $i) (local.get $n))))

      ;; Write all n bytes to stdout; a write may take fewer.
      (local.set $done (i32.const 0))
      (loop $write
        (i32.store (i32.const 0) (i32.add (global.get $buf) (local.get $done)))
        (i32.store (i32.const 4) (i32.sub (local.get $n) (local.get $done)))
        (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 1))))
        ;; A write of nothing would spin forever: fail instead.
        (if (i32.eqz (i32.load (i32.const 8)))
          (then (call $proc_exit (i32.const 1))))
        (local.set $done (i32.add (local.get $done) (i32.load (i32.const 8))))
        (br_if $write (i32.lt_u (local.get $done) (local.get $n))))
      (br $read)))
)
