"""Real faces: detection, 68-point landmarks, FFHQ alignment and identity embeddings (dlib).

Everything here needs the optional extra ``acneops[faces]`` (``dlib-bin`` + ``face_recognition_models``, which
ships dlib's offline models: HOG/CNN face detectors, 5/68-point landmark predictors and the face-recognition
ResNet). Without it, the first call raises an AcneopsError naming the extra; importing this package does not
need it. Faces are found on the real photos a user brings; the built-in phantom has no faces, and the stages say
"not applicable" there instead of a number.
"""
