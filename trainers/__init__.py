"""One QLoRA fine-tuning trial: config in, trained LoRA adapter and eval loss out.

Importing this package is cheap and touches no GPU library; `trainers.sft` pulls in the heavy stack.
"""
