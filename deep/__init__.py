"""Deep MR-VAEs (Conv, ResNet, NVAE, LSTM, beta-TCVAE) built on the conditioning core in linvae."""
