"""The sweep: an Optuna study of QLoRA trials. Decides what to try next, runs each trial in its
own process, records results, and reports. Never imports peft/bitsandbytes, so never touches CUDA."""
