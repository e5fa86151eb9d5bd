/*
 * The exported dlsym. RTLD_NEXT lookups are resolved relative to the caller,
 * which the C library finds from its return address, so they are forwarded
 * with a tail jump that leaves the caller's return address in place. Every
 * other lookup goes to vgpu_dlsym_hook, which may swap driver entry points
 * for hooks.
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
	movq vgpu_real_dlsym(%rip), %rax
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
	.section .note.GNU-stack,"",@progbits
