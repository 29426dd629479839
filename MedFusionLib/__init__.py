"""MedFusionLib: the Slicer-free engine of MedFusion (multi-modal medical image fusion).

Typical use::

    from MedFusionLib.io import read_image, write_image
    from MedFusionLib.pipeline import fuse_images

    result = fuse_images(read_image("t1.nii.gz", modality="MR"), read_image("pet.nii.gz", modality="PET"),
                         method="laplacian_pyramid")
    write_image(result.image, "fused.nii.gz")
"""

__version__ = "0.1.0"
