/*
 * The exported dlsym and dlvsym, and the trampolines for driver entry points
 * libvgpu does not know.
 *
 * RTLD_NEXT lookups are resolved relative to the caller, which the C library
 * finds from its return address. A hooked driver entry point is answered with
 * its hook whoever asks (vgpu_next_hook); every other RTLD_NEXT lookup is
 * forwarded with a tail jump that leaves the caller's return address in
 * place. Other handles go to vgpu_dlsym_hook / vgpu_dlvsym_hook, which swap
 * driver entry points for hooks.
 */
	.text
	.globl dlsym
	.type dlsym, @function
	.globl vgpu_dlsym_entry
	.hidden vgpu_dlsym_entry
	.type vgpu_dlsym_entry, @function
dlsym:
vgpu_dlsym_entry:
	cmpq $-1, %rdi
	jne vgpu_dlsym_hook
	pushq %rdi
	pushq %rsi
	subq $8, %rsp
	movq %rsi, %rdi
	call vgpu_next_hook
	addq $8, %rsp
	popq %rsi
	popq %rdi
	testq %rax, %rax
	jz 0f
	ret
0:	movq vgpu_real_dlsym(%rip), %rax
	testq %rax, %rax
	jz 1f
	jmp *%rax
1:	pushq %rdi
	pushq %rsi
	subq $8, %rsp
	call vgpu_resolve_dlsym
	addq $8, %rsp
	popq %rsi
	popq %rdi
	testq %rax, %rax
	jz 2f
	jmp *%rax
2:	ret
	.size dlsym, .-dlsym
	.size vgpu_dlsym_entry, .-vgpu_dlsym_entry

	.globl dlvsym
	.type dlvsym, @function
	.globl vgpu_dlvsym_entry
	.hidden vgpu_dlvsym_entry
dlvsym:
vgpu_dlvsym_entry:
	cmpq $-1, %rdi
	jne vgpu_dlvsym_hook
	pushq %rdi
	pushq %rsi
	pushq %rdx
	movq %rsi, %rdi
	call vgpu_next_hook
	popq %rdx
	popq %rsi
	popq %rdi
	testq %rax, %rax
	jz 0f
	ret
0:	pushq %rdi
	pushq %rsi
	pushq %rdx
	call vgpu_resolve_dlvsym
	popq %rdx
	popq %rsi
	popq %rdi
	testq %rax, %rax
	jz 1f
	jmp *%rax
1:	ret
	.size dlvsym, .-dlvsym

/*
 * Trampoline i (16 bytes each from vgpu_trampolines) saves the argument
 * registers, asks vgpu_tramp_called(i) for its target (which reports the call
 * when it escapes a limit), restores them and jumps there: the driver gets
 * the arguments and return address as if called directly, whatever its
 * signature.
 */
	.globl vgpu_trampolines
	.hidden vgpu_trampolines
	.balign 16
vgpu_trampolines:
	.set slot, 0
	.rept 64
	.balign 16
	movl $slot, %r11d
	jmp vgpu_tramp_common
	.set slot, slot + 1
	.endr

vgpu_tramp_common:
	pushq %rdi
	pushq %rsi
	pushq %rdx
	pushq %rcx
	pushq %r8
	pushq %r9
	pushq %rax
	subq $128, %rsp
	movdqu %xmm0, 0(%rsp)
	movdqu %xmm1, 16(%rsp)
	movdqu %xmm2, 32(%rsp)
	movdqu %xmm3, 48(%rsp)
	movdqu %xmm4, 64(%rsp)
	movdqu %xmm5, 80(%rsp)
	movdqu %xmm6, 96(%rsp)
	movdqu %xmm7, 112(%rsp)
	movl %r11d, %edi
	call vgpu_tramp_called
	movq %rax, %r11
	movdqu 0(%rsp), %xmm0
	movdqu 16(%rsp), %xmm1
	movdqu 32(%rsp), %xmm2
	movdqu 48(%rsp), %xmm3
	movdqu 64(%rsp), %xmm4
	movdqu 80(%rsp), %xmm5
	movdqu 96(%rsp), %xmm6
	movdqu 112(%rsp), %xmm7
	addq $128, %rsp
	popq %rax
	popq %r9
	popq %r8
	popq %rcx
	popq %rdx
	popq %rsi
	popq %rdi
	jmp *%r11
	.section .note.GNU-stack,"",@progbits
